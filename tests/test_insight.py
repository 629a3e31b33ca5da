"""Seeing and steering training: histories, schedules, plots, samples, TensorBoard, lr-find, novelty."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from charrnn.training.schedules import learning_rate

from .conftest import TINY, assert_one_line_error, train_tiny


def run(dataset, tmp_path, name="cp", **options):
    """The shared tiny model, with two layers (per-layer statistics need more than one)."""
    return train_tiny(dataset, tmp_path, name, **{"num_layers": 2, **options})


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


# -- richer history ------------------------------------------------------------------------------------
def test_history_records_learning_rate_gradient_norm_and_update_ratios(dataset, tmp_path):
    result = run(dataset, tmp_path, max_iters=30, stats_every=10, lr_schedule="cosine", min_lr=1e-4,
                 checkpoint_every=0)
    info = json.loads(result.checkpoint.with_suffix(".json").read_text())
    assert len(info["learning_rate_history"]) == 30 and info["learning_rate_history"][0] > info["learning_rate_history"][-1]
    assert info["stats_iterations"] == [10, 20, 30]
    assert len(info["grad_norm_history"]) == 3 and all(g > 0 for g in info["grad_norm_history"])
    assert set(info["update_ratio_history"]) == {"embed", "layer1", "layer2", "head"}
    assert all(-6 < r < 0 for ratios in info["update_ratio_history"].values() for r in ratios)
    for key in ("train_loss_history", "val_loss_history", "val_loss_history_it", "opt", "i"):
        assert key in info  # torch-rnn's keys unchanged


@pytest.mark.parametrize("scheme", ["xavier", "orthogonal", "normal"])
def test_weight_init_schemes(dataset, tmp_path, scheme):
    from charrnn import CharRNN, ModelConfig

    model = CharRNN(ModelConfig(10, rnn_size=8, wordvec_size=4))
    model.reset_parameters(scheme, std=0.02)
    w = model.rnns[0].weight_hh_l0.detach()
    if scheme == "normal":
        assert w.std().item() == pytest.approx(0.02, rel=0.25)
    if scheme == "orthogonal":
        block = w[:8]
        assert np.allclose((block @ block.T).numpy(), np.eye(8), atol=1e-5)
    assert (model.rnns[0].bias_ih_l0[8:16] == 1).all()  # forget bias 1 in every scheme
    assert run(dataset, tmp_path, max_iters=3, weight_init=scheme, checkpoint_every=0).iterations == 3


# -- samples during training -----------------------------------------------------------------------
def test_samples_during_training_leave_training_untouched(dataset, tmp_path, capsys):
    plain = run(dataset, tmp_path, "a", max_iters=20, dropout=0.2, checkpoint_every=0)
    sampled = run(dataset, tmp_path, "b", max_iters=20, dropout=0.2, checkpoint_every=0, sample_every=5,
                  sample_length=40, quiet=False)
    assert sampled.history.train_loss_history == plain.history.train_loss_history
    out = capsys.readouterr().out
    assert out.count("--- sample at i = ") == 4


# -- plots -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_runs(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return [run(dataset, out, f"lr{lr}", max_iters=20, checkpoint_every=10, learning_rate=lr, stats_every=5).checkpoint
            for lr in (0.1, 0.05, 0.01)]


def test_plot_figure_has_one_line_per_run(three_runs):
    pytest.importorskip("matplotlib")
    from charrnn.plot import load_run, make_figure

    runs = [load_run(p) for p in three_runs]
    fig = make_figure(runs, 900, 600)
    ax_loss, ax_lr, ax_ratio, ax_grad = fig.axes
    labels = [line.get_label() for line in ax_loss.get_lines() if not line.get_label().startswith("_")]
    assert [lab for lab in labels if "(lr" in lab] == ["lr0.1 (lr 0.1)", "lr0.05 (lr 0.05)", "lr0.01 (lr 0.01)"]
    assert len(ax_lr.get_lines()) == 3 and len(ax_grad.get_lines()) == 3
    assert len([ln for ln in ax_ratio.get_lines() if ln.get_label().startswith("lr")]) == 3 * 4  # 4 layers each
    assert tuple(fig.get_size_inches() * fig.dpi) == (900, 600)


def test_plot_cli_writes_png_and_svg(cli, three_runs, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "cmp.png"
    assert cli("plot", *three_runs, "-o", png, "--width", "640", "--height", "480").code == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 640 and int.from_bytes(data[20:24], "big") == 480
    svg = tmp_path / "cmp.svg"
    assert cli("plot", three_runs[0].parent, "-o", svg).code == 0
    assert "<svg" in svg.read_text()[:500]


def test_plot_bad_run(cli, tmp_path):
    assert_one_line_error(cli("plot", tmp_path / "nothing_1.json", "-o", tmp_path / "x.png"), "not found")


# -- TensorBoard -------------------------------------------------------------------------------------------
def test_tensorboard_logs_read_back(dataset, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(dataset, tmp_path, max_iters=20, checkpoint_every=10, stats_every=5, sample_every=10, sample_length=20,
        tensorboard=str(tmp_path / "tb"))
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/bpc", "train/learning_rate", "train/grad_norm", "val/loss", "val/bpc",
            "update_ratio/layer1"} <= tags
    assert len(acc.Scalars("train/loss")) == 20 and [e.step for e in acc.Scalars("val/loss")] == [10, 20]
    assert "sample/text_summary" in acc.Tags()["tensors"]


# -- lr-find, eval, novelty ----------------------------------------------------------------------------
def test_lr_find_suggests_a_finite_rate_and_writes_no_checkpoint(cli, dataset, tmp_path, monkeypatch):
    h5, js = dataset
    monkeypatch.chdir(tmp_path)
    flags = [arg for name in ("rnn_size", "wordvec_size", "num_layers", "batch_size", "seq_length", "gpu")
             for arg in ("--" + name.replace("_", "-"), TINY[name])]
    result = cli("lr-find", "--input-h5", h5, "--input-json", js, *flags, "--num-iters", "60",
                 "--start-lr", "1e-4", "--end-lr", "10", "-o", tmp_path / "lr.png")
    assert result.code == 0, result
    info = json.loads((tmp_path / "lr.json").read_text())
    assert info["suggestion"] is not None and 1e-4 <= info["suggestion"] <= 10 and math.isfinite(info["suggestion"])
    assert "suggested learning rate" in result.out
    assert not (tmp_path / "cv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["lr.json"] + (["lr.png"] if _has_mpl() else []))


def _has_mpl() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def test_eval_matches_validation_loss_from_training(cli, dataset, tmp_path):
    # eval computes in fp32; so must the training run's validation (--precision auto may pick bf16 here)
    result = run(dataset, tmp_path, max_iters=12, checkpoint_every=0, precision="fp32")
    out = cli("eval", "--checkpoint", result.checkpoint)
    assert out.code == 0, out
    printed = float(out.out.split("val loss = ")[1].split()[0])
    assert printed == pytest.approx(result.val_loss, abs=1e-6)
    assert "bits/char" in out.out


def test_novelty_is_zero_for_training_text_and_high_for_noise(dataset):
    from charrnn import Vocabulary, load_splits
    from charrnn.novelty import novelty

    h5, js = dataset
    train_ids = load_splits(h5, Vocabulary.load(js), ("train",))["train"]
    assert novelty(train_ids[1000:1500], train_ids, 15) == [0.0] * 15
    noise = np.random.default_rng(0).integers(1, train_ids.max() + 1, 500)
    fractions = novelty(noise, train_ids, 10)
    assert fractions[0] == 0.0 and fractions[-1] > 0.99 and fractions == sorted(fractions)


def test_novelty_cli(cli, trained):
    out = cli("novelty", "--checkpoint", trained, "--length", "300", "--max-n", "8")
    assert out.code == 0, out
    lines = out.out.strip().splitlines()
    assert lines[0].split() == ["length", "novel"] and len(lines) == 9


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
    ckpt = load_checkpoint(tmp_path)
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
    result = run(dataset, tmp_path, max_iters=1000, time_budget=30, val_max_batches=3, lr_schedule="cosine",
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
