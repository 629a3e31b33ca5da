"""Which recipe gives the best model per CPU-minute? Reproduces the README's table (not a test).

    python benchmarks/recipes.py --budget 80 [--corpus ../shared/data/tiny-shakespeare.txt]

Each recipe trains under ``--time-budget`` on the corpus with validation = the last 10% of the
text (``--val-frac 0.1 --test-frac 0``) and reports its final validation loss. Runs are
sequential, so each has the machine to itself.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import charrnn
from charrnn.presets import PRESETS

RECIPES = {
    "torch-rnn defaults (2x128, step decay)": {},
    "2x128, cosine 3e-3, warm-up": dict(learning_rate=3e-3, lr_schedule="cosine", warmup_iters=50),
    "1x256, cosine 3e-3": dict(num_layers=1, rnn_size=256, learning_rate=3e-3, lr_schedule="cosine", warmup_iters=50),
    "2x256, dropout 0.1, cosine 2e-3": dict(rnn_size=256, dropout=0.1, lr_schedule="cosine", warmup_iters=50),
    "1x512, cosine 2e-3": dict(num_layers=1, rnn_size=512, lr_schedule="cosine", warmup_iters=50),
    "2x128, constant 3e-3": dict(learning_rate=3e-3, lr_schedule="constant"),
    "1x256, cosine 4e-3 to 4e-4": dict(num_layers=1, rnn_size=256, learning_rate=4e-3, lr_schedule="cosine",
                                       warmup_iters=20, min_lr=4e-4),
    "2x128, cosine 3e-3 to 1e-3": dict(learning_rate=3e-3, lr_schedule="cosine", warmup_iters=20, min_lr=1e-3),
    "preset cpu-small": PRESETS["cpu-small"],
}


def main() -> None:
    here = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(here / "shared" / "data" / "tiny-shakespeare.txt"))
    parser.add_argument("--budget", type=float, default=80.0, help="seconds per recipe")
    parser.add_argument("--only", nargs="+", help="run only recipes whose name contains one of these")
    parser.add_argument("--output", default="recipes.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pre = charrnn.preprocess(args.corpus, Path(tmp) / "c.h5", Path(tmp) / "c.json", val_frac=0.1, test_frac=0.0)
        for name, options in RECIPES.items():
            if args.only and not any(part in name for part in args.only):
                continue
            t0 = time.monotonic()
            result = charrnn.train(input_h5=str(pre.output_h5), input_json=str(pre.output_json), gpu=-1,
                                   time_budget=args.budget, checkpoint_every=0, print_every=0, quiet=True,
                                   checkpoint_name=str(Path(tmp) / name.replace(" ", "_").replace("/", "_")),
                                   **{**options, "max_epochs": 1000})
            seconds = time.monotonic() - t0
            rows.append({"recipe": name, "options": options, "val_loss": result.val_loss,
                         "iterations": result.iterations, "seconds": seconds,
                         "train_loss": sum(result.history.train_loss_history[-50:]) / 50})
            print(f"| {name} | {result.val_loss:.3f} | {rows[-1]['train_loss']:.3f} | {result.iterations} "
                  f"| {seconds:.0f} s |", flush=True)
    Path(args.output).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
