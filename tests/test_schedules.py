"""Learning-rate schedules, time budgets and presets: how a run is steered over time."""

from __future__ import annotations

import json

import pytest

from charrnn.training.schedules import learning_rate

from .conftest import assert_one_line_error, train_two_layers


# -- schedules -------------------------------------------------------------------------------------
def test_step_schedule_is_torch_rnns():
    args = dict(base=0.01, total=1000, num_train=10, schedule="step", decay_every=2, decay_factor=0.5)
    assert [learning_rate(i, **args) for i in (1, 20, 21, 40, 41)] == [0.01, 0.01, 0.005, 0.005, 0.0025]


def test_cosine_schedule_with_warmup():
    args = dict(base=1.0, total=110, num_train=7, schedule="cosine", warmup_iters=10, min_lr=0.1)
    assert learning_rate(5, **args) == pytest.approx(0.5)  # half-way up the warm-up
    assert learning_rate(10, **args) == pytest.approx(1.0)
    assert learning_rate(60, **args) == pytest.approx(0.55)  # half-way down: (1 + 0.1) / 2
    assert learning_rate(110, **args) == pytest.approx(0.1)


def test_constant_schedule():
    assert {learning_rate(i, 0.3, 50, 5, "constant") for i in range(1, 51)} == {0.3}


# -- time budget and presets ------------------------------------------------------------------------
@pytest.mark.slow
def test_time_budget_ends_on_time_with_a_valid_checkpoint(cli, dataset, tmp_path):
    import time

    from charrnn import load_checkpoint

    h5, js = dataset
    t0 = time.monotonic()
    result = cli("train", "--input-h5", h5, "--input-json", js, "--rnn-size", "32", "--num-layers", "1",
                 "--batch-size", "8", "--seq-length", "32", "--gpu", "-1", "--print-every", "0",
                 "--time-budget", "10s", "--lr-schedule", "cosine", "--max-epochs", "10000",
                 "--checkpoint-name", tmp_path / "tb")
    elapsed = time.monotonic() - t0
    assert result.code == 0, result.err
    assert elapsed < 10 + 5  # the budget, plus start-up and the final checkpoint
    ckpt = load_checkpoint(tmp_path, newest=True)  # the final checkpoint (a directory alone means the best)
    lrs = json.loads(ckpt.path.with_suffix(".json").read_text())["learning_rate_history"]
    assert ckpt.iteration > 20 and len(lrs) == ckpt.iteration
    assert lrs[-1] < 0.1 * lrs[len(lrs) // 4]  # the cosine decay was planned to end at the deadline


def test_time_budget_plans_the_schedule_to_end_at_the_deadline(dataset, tmp_path, monkeypatch):
    """With a clock that advances 1 s per iteration, a 30 s budget ends at a planned, predictable iteration."""
    import itertools
    import time
    import types

    from charrnn.training import subscribers

    clock = itertools.count()
    monkeypatch.setattr(subscribers, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock)),
                                                                   time=time.time))
    result = train_two_layers(dataset, tmp_path, max_iters=1000, time_budget=30, val_max_batches=3, lr_schedule="cosine",
                 min_lr=1e-4, checkpoint_every=0)
    # 1 s per iteration, and a reserve of 3 val batches x 1/3 s + 0.25 s: planned at iteration 5 to end at 28
    assert result.iterations == 28 and result.checkpoint == tmp_path / "cp_28.pt"
    lrs = result.history.learning_rate_history
    assert lrs[-1] == pytest.approx(1e-4)  # the cosine decay reached its floor on the last iteration
    end = json.loads((tmp_path / "cp.stats.jsonl").read_text().splitlines()[-1])
    assert end["reason"] == "budget" and end["i"] == 28


def test_duration_parsing_and_presets(cli, dataset, tmp_path):
    h5, js = dataset
    assert_one_line_error(cli("train", "--input-h5", h5, "--input-json", js, "--time-budget", "soon"), "duration")
    result = cli("train", "--input-h5", h5, "--input-json", js, "--preset", "cpu-small", "--rnn-size", "8",
                 "--max-iters", "2", "--gpu", "-1", "--checkpoint-name", tmp_path / "p", "--quiet")
    assert result.code == 0, result.err
    info = json.loads((tmp_path / "p_2.json").read_text())["opt"]
    from charrnn.training.presets import PRESETS
    assert info["rnn_size"] == 8  # an explicit flag wins over the preset
    assert info["lr_schedule"] == PRESETS["cpu-small"]["lr_schedule"]
    assert info["num_layers"] == PRESETS["cpu-small"]["num_layers"]
