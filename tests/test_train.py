"""Training: falling loss, checkpoints, exact resume, schedules, guards and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from charrnn import load_checkpoint, train
from charrnn.training import TrainConfig, Trainer

from .conftest import TINY_MODEL, assert_one_line_error

TINY = dict(rnn_size=16, wordvec_size=8, num_layers=1, batch_size=4, seq_length=16, gpu=-1,
            print_every=0, quiet=True)


def run(dataset, tmp_path, name="checkpoint", **options):
    h5, js = dataset
    opts = {**TINY, "input_h5": str(h5), "input_json": str(js), "checkpoint_name": str(tmp_path / name), **options}
    return train(**opts)


def test_loss_falls(dataset, tmp_path):
    result = run(dataset, tmp_path, max_iters=150, checkpoint_every=0, learning_rate=1e-2)
    losses = result.history.train_loss_history
    assert len(losses) == 150
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert result.val_loss is not None and result.val_loss < losses[0]


def test_checkpoint_files_follow_torch_rnn(dataset, tmp_path):
    result = run(dataset, tmp_path, max_iters=25, checkpoint_every=10, speed_benchmark=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.stats.jsonl"] + [f"checkpoint_{i}.{ext}" for i in (10, 20, 25) for ext in ("json", "pt")]
    info = json.loads((tmp_path / "checkpoint_25.json").read_text())
    for key in ("opt", "train_loss_history", "val_loss_history", "val_loss_history_it",
                "forward_backward_times", "memory_usage", "i"):
        assert key in info
    assert info["i"] == 25 and len(info["train_loss_history"]) == 25
    assert info["val_loss_history_it"] == [10, 20, 25]
    assert len(info["forward_backward_times"]) == 25
    assert info["opt"]["rnn_size"] == 16
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.iteration == 25 and ckpt.model_config.rnn_size == 16


def test_seeded_runs_are_identical(dataset, tmp_path):
    a = run(dataset, tmp_path, "a", max_iters=15, checkpoint_every=0, dropout=0.3)
    b = run(dataset, tmp_path, "b", max_iters=15, checkpoint_every=0, dropout=0.3)
    c = run(dataset, tmp_path, "c", max_iters=15, checkpoint_every=0, dropout=0.3, seed=7)
    assert a.history.train_loss_history == b.history.train_loss_history
    assert a.history.train_loss_history != c.history.train_loss_history


@pytest.mark.parametrize("model_type", ["lstm", "gru"])
def test_resume_continues_exactly(dataset, tmp_path, model_type):
    opts = dict(checkpoint_every=12, dropout=0.25, num_layers=2, model_type=model_type, max_epochs=100)
    straight = run(dataset, tmp_path, "straight", max_iters=24, **opts)
    half = run(dataset, tmp_path, "half", max_iters=12, **opts)
    resumed = train(resume=str(half.checkpoint), max_iters=24, quiet=True)
    assert resumed.checkpoint == tmp_path / "half_24.pt"
    assert resumed.history.train_loss_history == straight.history.train_loss_history
    assert resumed.history.val_loss_history == straight.history.val_loss_history


def test_stop_request_saves_mid_epoch_and_resumes_exactly(dataset, tmp_path, monkeypatch):
    """What Ctrl-C does: finish the iteration, save (with the carried hidden state), resume exactly."""
    from charrnn.progress import Progress

    h5, js = dataset
    base = dict(input_h5=str(h5), input_json=str(js), rnn_size=16, wordvec_size=8, num_layers=1, batch_size=4,
                seq_length=16, gpu=-1, print_every=0, checkpoint_every=0, max_iters=20)
    straight = Trainer(TrainConfig(**base, checkpoint_name=str(tmp_path / "all")), quiet=True).run()
    trainer = Trainer(TrainConfig(**base, checkpoint_name=str(tmp_path / "sig")), quiet=True)
    real_update = Progress.update

    def update(self, i, loss, lr):
        real_update(self, i, loss, lr)
        if i == 9:
            trainer.request_stop()

    monkeypatch.setattr(Progress, "update", update)
    result = trainer.run()
    monkeypatch.undo()
    assert result.interrupted_by is not None and result.iterations == 9
    assert result.checkpoint == tmp_path / "sig_9.pt"
    assert load_checkpoint(result.checkpoint).train_state["state"] is not None  # hidden state carried
    resumed = train(resume=str(result.checkpoint), quiet=True)
    assert resumed.history.train_loss_history == straight.history.train_loss_history


def test_learning_rate_decays_per_epoch(dataset, tmp_path):
    result = run(dataset, tmp_path, max_epochs=3, lr_decay_every=1, lr_decay_factor=0.5, checkpoint_every=0,
                 batch_size=16, seq_length=64)
    lrs = result.history.learning_rate_history
    per_epoch = len(lrs) // 3
    assert lrs[0] == lrs[per_epoch - 1] == 2e-3
    assert lrs[per_epoch] == 1e-3 and lrs[2 * per_epoch] == 5e-4


def test_init_from_keeps_weights_and_optionally_the_counter(dataset, tmp_path, trained):
    source = load_checkpoint(trained)
    result = run(dataset, tmp_path, "fine", init_from=str(trained), max_iters=35, reset_iterations=False,
                 rnn_size=99)  # the architecture comes from the checkpoint
    assert len(result.history.train_loss_history) == 5
    assert load_checkpoint(result.checkpoint).model_config == source.model_config
    fresh = run(dataset, tmp_path, "fresh", max_iters=1, checkpoint_every=0)
    warm = run(dataset, tmp_path, "warm", max_iters=1, checkpoint_every=0, init_from=str(trained))
    assert warm.history.train_loss_history[0] < fresh.history.train_loss_history[0]


def test_refuses_to_overwrite_an_existing_run(cli, dataset, tmp_path):
    h5, js = dataset
    args = ["train", "--input-h5", h5, "--input-json", js, *TINY_MODEL, "--max-iters", "3",
            "--checkpoint-name", tmp_path / "cp"]
    assert cli(*args).code == 0
    assert_one_line_error(cli(*args), "already exists", "--resume", "--overwrite")
    assert cli(*args, "--overwrite").code == 0


def test_divergence_stops_with_a_clear_message(cli, dataset, tmp_path):
    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, *TINY_MODEL, "--max-iters", "200",
                 "--learning-rate", "1e4", "--grad-clip", "0", "--checkpoint-name", tmp_path / "cp")
    assert_one_line_error(result, "diverged at iteration", "learning-rate")
    assert not list(tmp_path.glob("cp_*"))


def test_cli_train_prints_torch_rnn_lines_and_bits_per_char(cli, dataset, tmp_path):
    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, *TINY_MODEL[:-2], "--print-every", "5",
                 "--max-iters", "10", "--checkpoint-name", tmp_path / "cp")
    assert result.code == 0, result
    assert "Epoch 1.02 / 50, i = 5 / 10, loss = " in result.out
    assert "bits/char" in result.out and "final checkpoint:" in result.out
    assert "CPU" in result.out


# -- bad input --------------------------------------------------------------------------------
def test_hdf5_and_json_that_do_not_belong_together(cli, dataset, tmp_path):
    h5, _ = dataset
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"idx_to_token": {"1": "a", "2": "b"}, "token_to_idx": {"a": 1, "b": 2}}))
    result = cli("train", "--input-h5", h5, "--input-json", other, *TINY_MODEL, "--checkpoint-name", tmp_path / "c")
    assert_one_line_error(result, "do not belong together")


def test_corpus_too_short_for_one_sequence(cli, tmp_path):
    corpus = tmp_path / "short.txt"
    corpus.write_text("abcdefghij" * 3)
    assert cli("preprocess", "--input-txt", corpus, "--quiet").code == 0
    result = cli("train", "--input-h5", tmp_path / "short.h5", "--input-json", tmp_path / "short.json",
                 "--seq-length", "50", "--gpu", "-1", "--checkpoint-name", tmp_path / "c")
    assert_one_line_error(result, "too few", "--seq-length")


@pytest.mark.parametrize("flag,value", [("--rnn-size", "0"), ("--batch-size", "-3"), ("--seq-length", "0"),
                                        ("--learning-rate", "0"), ("--dropout", "1.5"), ("--model-type", "tcn")])
def test_bad_flag_values(cli, dataset, tmp_path, flag, value):
    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, flag, value, "--checkpoint-name", tmp_path / "c")
    assert_one_line_error(result, flag)


def test_gpu_that_does_not_exist(cli, dataset, tmp_path):
    if torch.cuda.device_count() > 5:
        pytest.skip("this machine has many GPUs")
    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, "--gpu", "5", "--checkpoint-name", tmp_path / "c")
    assert_one_line_error(result, "--gpu 5")


def test_missing_inputs(cli, tmp_path):
    assert_one_line_error(cli("train", "--input-h5", tmp_path / "x.h5", "--input-json", tmp_path / "x.json",
                              "--gpu", "-1", "--checkpoint-name", tmp_path / "c"), "not found")
    assert_one_line_error(cli("train", "--gpu", "-1"), "--input-h5")


def test_truncated_hdf5(cli, dataset, tmp_path):
    h5, js = dataset
    bad = tmp_path / "bad.h5"
    bad.write_bytes(h5.read_bytes()[:500])
    result = cli("train", "--input-h5", bad, "--input-json", js, "--gpu", "-1", "--checkpoint-name", tmp_path / "c")
    assert_one_line_error(result, "bad.h5")
