"""--preset auto: the recipe is chosen by a rule over measured speeds, printed, recorded and kept."""

from __future__ import annotations

import json

import pytest

from charrnn.training.recipe import CANDIDATES, MIN_UPDATES, Shape, choose, dropout_for

from .conftest import assert_one_line_error


@pytest.fixture
def one_thread():
    """One torch thread: a step's time stays predictable on a loaded shared machine. Also pays the
    one-off import of the fused optimizer (torch._dynamo, seconds on a loaded machine) up front, so
    that it does not eat the calibration's share of the budget."""
    import torch

    from charrnn.training.step import build_optimizer
    build_optimizer(torch.nn.Linear(1, 1), 1e-3, torch.device("cpu"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def opt_of(directory) -> dict:
    from charrnn import load_checkpoint
    opt = json.loads(load_checkpoint(directory).path.with_suffix(".json").read_text())["opt"]
    return {**opt, "recipe": json.loads(opt["recipe"]) if opt["recipe"] else None}  # stored as JSON text


# -- the rule (a pure function of measured speeds, corpus size and budget) ---------------------------
def test_the_largest_candidate_with_enough_updates_wins():
    speeds = {s: 100.0 / (k + 1) ** 2 for k, s in enumerate(CANDIDATES)}  # larger = slower
    for seconds in (30, 300, 3000):
        recipe = choose(speeds, seconds, 1_000_000, 65)
        shape = Shape(recipe.num_layers, recipe.rnn_size, recipe.batch_size)
        assert speeds[shape] * seconds >= MIN_UPDATES
        larger = [s for s in CANDIDATES if s.parameters(65) > shape.parameters(65)]
        assert all(speeds[s] * seconds < MIN_UPDATES for s in larger)
    small, big = choose(speeds, 30, 1_000_000, 65), choose(speeds, 3000, 1_000_000, 65)
    assert big.rnn_size * big.num_layers > small.rnn_size * small.num_layers  # more time, more capacity
    assert big.learning_rate < small.learning_rate * 2 and big.min_lr == pytest.approx(big.learning_rate / 10)


def test_without_enough_time_the_candidate_seeing_most_characters_wins():
    speeds = {Shape(1, 256, 50): 1.0, Shape(2, 512, 64): 0.5}
    recipe = choose(speeds, 10, 1_000_000, 65)
    assert (recipe.num_layers, recipe.rnn_size, recipe.dropout) == (1, 256, 0.0)
    assert "no candidate reaches" in recipe.why


def test_an_iteration_limit_caps_the_updates_the_rule_counts_on():
    speeds = {s: 100.0 / (k + 1) ** 2 for k, s in enumerate(CANDIDATES)}
    free = choose(speeds, 3000, 1_000_000, 65)
    capped = choose(speeds, 3000, 1_000_000, 65, max_updates=MIN_UPDATES - 1)
    assert capped.expected_updates == MIN_UPDATES - 1 < free.expected_updates
    assert (free.num_layers, free.rnn_size) == (CANDIDATES[-1].num_layers, CANDIDATES[-1].rnn_size)
    assert (capped.num_layers, capped.rnn_size) == (CANDIDATES[0].num_layers, CANDIDATES[0].rnn_size)


def test_dropout_grows_with_epochs_and_parameters_per_character():
    assert dropout_for(0.3, epochs=0.5) == 0.0  # no overfitting within the first pass
    assert dropout_for(0.3, epochs=10, num_layers=1) == 0.0  # on one layer's output it did not help
    assert dropout_for(100.0, epochs=10) == 0.0  # a corpus far larger than the model
    assert 0 < dropout_for(5.0, epochs=10) < dropout_for(0.3, epochs=10)
    speeds = {Shape(2, 512, 64): 10.0}
    assert choose(speeds, 600, 1_000_000, 65).dropout > choose(speeds, 600, 100_000_000, 65).dropout


# -- through the CLI ------------------------------------------------------------------------------------
FAST = ["--batch-size", "4", "--seq-length", "16", "--gpu", "-1", "--print-every", "0", "--max-epochs", "100000"]


def test_a_budget_picks_prints_and_records_a_recipe_that_resuming_keeps(cli, dataset, tmp_path, one_thread):
    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, "--time-budget", "4s", *FAST,
                 "--learning-rate", "0.01", "--checkpoint-name", tmp_path / "auto")
    assert result.code == 0, result.err
    assert "recipe (--preset auto):" in result.out and "because" in result.out
    opt = opt_of(tmp_path)
    recipe = opt["recipe"]
    assert recipe["iterations_per_s"] and recipe["why"] in result.out
    for name, value in recipe["applied"].items():  # the run used what the recipe says it used ...
        assert opt[name] == value, name
    assert (opt["num_layers"], opt["rnn_size"]) == (recipe["num_layers"], recipe["rnn_size"])
    assert opt["learning_rate"] == 0.01 != recipe["learning_rate"]  # ... except the explicit flags
    assert (opt["batch_size"], opt["seq_length"]) == (4, 16)
    assert opt["lr_schedule"] == "cosine" and opt["precision"] == "auto"
    # the budget ended the run (how its plan meets the deadline: test_time_budget_plans_the_schedule_...)
    end = json.loads((tmp_path / "auto.stats.jsonl").read_text().splitlines()[-1])
    assert end["type"] == "end" and end["reason"] == "budget"
    # Resuming keeps the recorded recipe and does not calibrate again.
    from charrnn import load_checkpoint
    result = cli("train", "--resume", load_checkpoint(tmp_path, newest=True).path, "--time-budget", "1s")
    assert result.code == 0, result.err
    assert "recipe (--preset auto)" not in result.out
    assert opt_of(tmp_path)["recipe"] == recipe


def test_explicit_architecture_or_preset_keeps_the_auto_recipe_out(cli, dataset, tmp_path, one_thread):
    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, "--time-budget", "1s", *FAST,
                 "--rnn-size", "16", "--num-layers", "1", "--checkpoint-name", tmp_path / "fixed" / "c")
    assert result.code == 0, result.err
    assert "recipe (--preset auto)" not in result.out
    opt = opt_of(tmp_path / "fixed")
    assert opt["recipe"] is None and (opt["rnn_size"], opt["num_layers"], opt["lr_schedule"]) == (16, 1, "step")
    # --preset auto with an architecture flag: the recipe is chosen, and the flag still wins.
    result = cli("train", "--input-h5", h5, "--input-json", js, "--time-budget", "2s", *FAST, "--preset", "auto",
                 "--rnn-size", "24", "--checkpoint-name", tmp_path / "mixed" / "c")
    assert result.code == 0, result.err
    assert "recipe (--preset auto):" in result.out and "explicit flags kept: batch_size, rnn_size" in result.out
    opt = opt_of(tmp_path / "mixed")
    assert opt["rnn_size"] == 24 and opt["recipe"]["rnn_size"] in {s.rnn_size for s in CANDIDATES}
    assert opt["num_layers"] == opt["recipe"]["num_layers"] and opt["lr_schedule"] == "cosine"


def test_no_budget_keeps_torch_rnn_defaults(cli, dataset, tmp_path):
    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, "--max-iters", "2", "--gpu", "-1",
                 "--checkpoint-name", tmp_path / "d", "--quiet")
    assert result.code == 0, result.err
    opt = opt_of(tmp_path)
    assert opt["recipe"] is None
    assert (opt["num_layers"], opt["rnn_size"], opt["learning_rate"], opt["lr_schedule"], opt["dropout"]) == \
        (2, 128, 2e-3, "step", 0.0)


def test_preset_auto_needs_a_budget(cli, dataset, tmp_path):
    h5, js = dataset
    assert_one_line_error(cli("train", "--input-h5", h5, "--input-json", js, "--preset", "auto",
                              "--checkpoint-name", tmp_path / "x"), "--time-budget")


@pytest.mark.parametrize("gain, threads", [(0.0, 1), (float("inf"), 2)])
def test_calibration_may_train_on_one_thread_and_restores_the_count(cli, dataset, tmp_path, monkeypatch, gain, threads):
    import torch

    from charrnn.training import recipe
    h5, js = dataset
    monkeypatch.setattr(recipe, "ONE_THREAD_GAIN", gain)  # force each choice
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = cli("train", "--input-h5", h5, "--input-json", js, "--time-budget", "2s", *FAST,
                     "--checkpoint-name", tmp_path / "t")
        assert torch.get_num_threads() == 2  # the caller's setting is back after the run
    finally:
        torch.set_num_threads(before)
    assert result.code == 0, result.err
    assert opt_of(tmp_path)["recipe"]["threads"] == threads
    assert ("training on 1 torch thread" in result.out) == (threads == 1)
