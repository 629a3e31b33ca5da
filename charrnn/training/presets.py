"""Named recipes: flag sets chosen by experiment (see benchmarks/recipes.py and the README)."""

PRESETS: dict[str, dict] = {
    # A small corpus (about 1 MB) on a laptop CPU, a few minutes of training.
    # Chosen by benchmarks/recipes.py on tiny-shakespeare (README, "Best model per CPU-minute").
    "cpu-small": dict(num_layers=1, rnn_size=256, wordvec_size=64, batch_size=50, seq_length=50,
                      learning_rate=4e-3, lr_schedule="cosine", warmup_iters=20, min_lr=4e-4, dropout=0.0,
                      precision="auto"),
    # Chosen at run time for this machine, corpus and --time-budget (charrnn/recipe.py); the default
    # whenever a time budget is given without an architecture flag.
    "auto": {},
}
