"""Training: falling loss, checkpoints, exact resume, schedules, guards and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from charrnn import load_checkpoint, train
from charrnn.training import TrainConfig, Trainer

from .conftest import TINY, TINY_MODEL, assert_one_line_error


def test_loss_falls(tiny_train):
    result = tiny_train(max_iters=150, checkpoint_every=0, learning_rate=1e-2)
    losses = result.history.train_loss_history
    assert len(losses) == 150
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert result.val_loss is not None and result.val_loss < losses[0]


def test_checkpoint_files_follow_torch_rnn(tiny_train, tmp_path):
    result = tiny_train(max_iters=25, checkpoint_every=10, speed_benchmark=True)
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


def test_seeded_runs_are_identical(tiny_train):
    a = tiny_train("a", max_iters=15, checkpoint_every=0, dropout=0.3)
    b = tiny_train("b", max_iters=15, checkpoint_every=0, dropout=0.3)
    c = tiny_train("c", max_iters=15, checkpoint_every=0, dropout=0.3, seed=7)
    assert a.history.train_loss_history == b.history.train_loss_history
    assert a.history.train_loss_history != c.history.train_loss_history


@pytest.mark.parametrize("model_type", ["lstm", "gru"])
def test_resume_continues_exactly(tiny_train, tmp_path, model_type):
    opts = dict(checkpoint_every=12, dropout=0.25, num_layers=2, model_type=model_type, max_epochs=100)
    straight = tiny_train("straight", max_iters=24, **opts)
    half = tiny_train("half", max_iters=12, **opts)
    resumed = train(resume=str(half.checkpoint), max_iters=24, quiet=True)
    assert resumed.checkpoint == tmp_path / "half_24.pt"
    assert resumed.history.train_loss_history == straight.history.train_loss_history
    assert resumed.history.val_loss_history == straight.history.val_loss_history


def test_a_schedule_that_ends_at_zero_leaves_a_resumable_checkpoint(tiny_train):
    """Cosine with --min-lr 0 ends at exactly lr 0; that checkpoint must still load and resume."""
    first = tiny_train("cos", max_iters=10, checkpoint_every=0, lr_schedule="cosine", min_lr=0.0)
    assert first.history.learning_rate_history[-1] == 0.0
    resumed = train(resume=str(first.checkpoint), max_iters=12, quiet=True)
    assert resumed.iterations == 12


def test_stop_request_saves_mid_epoch_and_resumes_exactly(dataset, tmp_path, monkeypatch):
    """What Ctrl-C does: finish the iteration, save (with the carried hidden state), resume exactly."""
    from charrnn.training.progress import Progress

    h5, js = dataset
    base = dict(TINY, input_h5=str(h5), input_json=str(js), checkpoint_every=0, max_iters=20)
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
    assert read_stats(tmp_path / "sig.stats.jsonl")[-1]["reason"] == "signal"
    resumed = train(resume=str(result.checkpoint), quiet=True)
    assert resumed.history.train_loss_history == straight.history.train_loss_history


def test_learning_rate_decays_per_epoch(tiny_train):
    result = tiny_train(max_epochs=3, lr_decay_every=1, lr_decay_factor=0.5, checkpoint_every=0,
                 batch_size=16, seq_length=64)
    lrs = result.history.learning_rate_history
    per_epoch = len(lrs) // 3
    assert lrs[0] == lrs[per_epoch - 1] == 2e-3
    assert lrs[per_epoch] == 1e-3 and lrs[2 * per_epoch] == 5e-4


def test_init_from_keeps_weights_and_optionally_the_counter(tiny_train, trained):
    source = load_checkpoint(trained)
    result = tiny_train("fine", init_from=str(trained), max_iters=35, reset_iterations=False,
                 rnn_size=99)  # the architecture comes from the checkpoint
    assert len(result.history.train_loss_history) == 5
    assert load_checkpoint(result.checkpoint).model_config == source.model_config
    fresh = tiny_train("fresh", max_iters=1, checkpoint_every=0)
    warm = tiny_train("warm", max_iters=1, checkpoint_every=0, init_from=str(trained))
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


# -- the stats file (the live dashboard's feed) -------------------------------------------------------
def read_stats(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stats_file_holds_every_event_of_the_run(tiny_train, tmp_path):
    result = tiny_train(max_iters=25, checkpoint_every=10, stats_every=10, sample_every=20, sample_length=30)
    lines = read_stats(tmp_path / "checkpoint.stats.jsonl")
    start, end = lines[0], lines[-1]
    assert start["type"] == "start" and start["iteration"] == 0 and start["config"]["rnn_size"] == 16
    from charrnn.precision import resolve_precision
    auto = resolve_precision("auto", torch.device("cpu"))  # the default: bf16 where native
    assert start["model"]["rnn_size"] == 16 and start["precision"] == ("fp32" if auto is None else "bf16")
    model = load_checkpoint(result.checkpoint).build_model()
    assert start["parameters"] == sum(p.numel() for p in model.parameters())
    train_lines = [x for x in lines if x["type"] == "train"]
    assert [x["i"] for x in train_lines] == [10, 20, 25]  # every --stats-every, and the pending rest at the end
    assert [loss for x in train_lines for loss in x["losses"]] == result.history.train_loss_history
    assert [x["grad_norm"] for x in train_lines[:2]] == result.history.grad_norm_history and train_lines[2]["grad_norm"] is None
    assert set(train_lines[0]["update_ratio"]) == {"embed", "layer1", "head"} and train_lines[2]["update_ratio"] == {}
    assert [x["lr"] for x in train_lines] == [result.history.learning_rate_history[i - 1] for i in (10, 20, 25)]
    assert all(x["chars_per_s"] > 0 for x in train_lines)
    vals = [x for x in lines if x["type"] == "val"]
    assert [(x["i"], x["val_loss"]) for x in vals] == list(zip(result.history.val_loss_history_it,
                                                               result.history.val_loss_history))
    assert [x["path"] for x in lines if x["type"] == "checkpoint"] == [str(tmp_path / f"checkpoint_{i}.pt")
                                                                      for i in (10, 20, 25)]
    samples = [x for x in lines if x["type"] == "sample"]
    assert [x["i"] for x in samples] == [20] and len(samples[0]["text"]) == 30 and samples[0]["temperature"] == 1.0
    assert end == {"type": "end", "i": 25, "time": end["time"], "reason": "done"}
    assert [x["time"] for x in lines] == sorted(x["time"] for x in lines)


def test_stats_file_of_a_resumed_run_replays_the_straight_run(tiny_train, tmp_path):
    """A reader that drops points past each start line's iteration sees exactly the straight run's losses."""
    straight = tiny_train("straight", max_iters=20, checkpoint_every=8, stats_every=3)
    first = tiny_train("half", max_iters=20, checkpoint_every=8, stats_every=3)  # then pretend it died at 16
    train(resume=str(tmp_path / "half_16.pt"), quiet=True)
    lines = read_stats(tmp_path / "half.stats.jsonl")
    assert [x["iteration"] for x in lines if x["type"] == "start"] == [0, 16]
    assert [x["reason"] for x in lines if x["type"] == "end"] == ["done", "done"]
    losses: dict[int, float] = {}
    for x in lines:
        if x["type"] == "start":
            losses = {i: v for i, v in losses.items() if i <= x["iteration"]}
        elif x["type"] == "train":
            losses.update(zip(range(x["i"] - len(x["losses"]) + 1, x["i"] + 1), x["losses"]))
    assert [losses[i] for i in sorted(losses)] == straight.history.train_loss_history
    assert first.history.train_loss_history == straight.history.train_loss_history


@pytest.mark.parametrize("options,reason", [
    (dict(max_iters=400, checkpoint_every=2, patience=2, learning_rate=3.0, max_loss_factor=0), "patience"),
    (dict(max_iters=200, learning_rate=1e4, grad_clip=0), "diverged"),
])
def test_stats_file_says_why_the_run_ended(tiny_train, tmp_path, options, reason):
    try:
        tiny_train(**options)
    except Exception as exc:  # noqa: BLE001  (divergence raises)
        assert reason == "diverged" and "diverged" in str(exc)
    end = read_stats(tmp_path / "checkpoint.stats.jsonl")[-1]
    assert end["type"] == "end" and end["reason"] == reason


# -- resuming never trusts the paths stored in a checkpoint --------------------------------------------
def tamper(path, **config):
    """Rewrite the training configuration stored in a checkpoint, as a hostile file would."""
    data = torch.load(path, weights_only=True)
    data["train_state"]["config"].update(config)
    torch.save(data, path)


def test_resume_writes_beside_the_resumed_file_not_where_the_file_says(tiny_train, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    tiny_train("run/cp", max_iters=6, checkpoint_every=3, keep_last=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    decoys = [elsewhere / f"victim_{i}.pt" for i in (1, 2)]
    for decoy in decoys:
        decoy.write_text("precious")
    tamper(run / "cp_6.pt", checkpoint_name=str(elsewhere / "victim"), tensorboard=str(tmp_path / "tb"),
           keep_last=1)
    moved = tmp_path / "moved"
    moved.mkdir()
    (run / "cp_6.pt").rename(moved / "cp_6.pt")
    result = train(resume=str(moved / "cp_6.pt"), max_iters=9, checkpoint_every=3)
    assert result.checkpoint == moved / "cp_9.pt"
    assert sorted(p.name for p in moved.iterdir()) == ["cp.stats.jsonl", "cp_9.json", "cp_9.pt"]  # keep_last 1
    assert all(d.read_text() == "precious" for d in decoys) and sorted(elsewhere.iterdir()) == decoys
    assert not (tmp_path / "tb").exists()
    assert "--tensorboard" in capsys.readouterr().out  # says how to continue TensorBoard logging


def test_resume_reads_stored_inputs_only_if_they_exist_and_says_so(cli, tiny_train, dataset, tmp_path):
    h5, js = dataset
    tiny_train(max_iters=4)
    result = cli("train", "--resume", tmp_path / "checkpoint_4.pt", "--max-iters", "5")
    assert result.code == 0, result.err
    assert f"--input-h5 {h5} (stored in the checkpoint)" in result.out
    tamper(tmp_path / "checkpoint_5.pt", input_h5=str(tmp_path / "gone.h5"))
    assert_one_line_error(cli("train", "--resume", tmp_path / "checkpoint_5.pt", "--max-iters", "6"),
                          "--input-h5 is required", "gone.h5", "does not exist")
    given = cli("train", "--resume", tmp_path / "checkpoint_5.pt", "--max-iters", "6", "--input-h5", h5)
    assert given.code == 0, given.err
    assert load_checkpoint(tmp_path / "checkpoint_6.pt").train_state["config"]["input_h5"] == str(h5)


def test_resume_under_another_name_refuses_to_overwrite_that_run(cli, tiny_train, tmp_path):
    tiny_train("a", max_iters=4)
    tiny_train("b", max_iters=6)
    result = cli("train", "--resume", tmp_path / "a_4.pt", "--max-iters", "6", "--checkpoint-name", tmp_path / "b")
    assert_one_line_error(result, "b_6.pt already exists", "--overwrite")


def test_hostile_stored_option_values_are_clean_errors(cli, tiny_train, tmp_path):
    tiny_train(max_iters=3)
    tamper(tmp_path / "checkpoint_3.pt", batch_size="many")
    assert_one_line_error(cli("train", "--resume", tmp_path / "checkpoint_3.pt", "--max-iters", "4"),
                          "checkpoint_3.pt", "batch_size")
