"""A directory samples its newest run's best checkpoint; a resume continues from the newest."""

from __future__ import annotations

import json

import pytest

from charrnn.checkpoint import best_checkpoint, load_checkpoint, newest_checkpoint, resolve_checkpoint

from .conftest import TINY_MODEL


@pytest.fixture
def run_dir(tiny_train, tmp_path):
    """A run with checkpoints at 10, 20, 30 whose newest JSON says iteration 20 validated best."""
    tiny_train(max_iters=30, checkpoint_every=10)
    newest = tmp_path / "checkpoint_30.json"
    info = json.loads(newest.read_text())
    assert info["val_loss_history_it"] == [10, 20, 30]
    info["val_loss_history"] = [3.0, 1.0, 2.0]
    newest.write_text(json.dumps(info))
    return tmp_path


def test_a_directory_resolves_to_the_best_checkpoint_and_resume_to_the_newest(run_dir):
    assert resolve_checkpoint(run_dir) == run_dir / "checkpoint_20.pt"
    assert best_checkpoint(run_dir) == run_dir / "checkpoint_20.pt"
    assert resolve_checkpoint(run_dir, newest=True) == newest_checkpoint(run_dir) == run_dir / "checkpoint_30.pt"
    assert load_checkpoint(run_dir).iteration == 20
    assert load_checkpoint(run_dir, newest=True).iteration == 30


def test_the_best_checkpoint_deleted_falls_back_to_the_next_best_on_disk(run_dir):
    (run_dir / "checkpoint_20.pt").unlink()
    assert resolve_checkpoint(run_dir) == run_dir / "checkpoint_30.pt"  # 2.0 beats 3.0
    (run_dir / "checkpoint_30.json").write_text("{not json")
    assert resolve_checkpoint(run_dir) == run_dir / "checkpoint_30.pt"  # no history: the newest


@pytest.mark.parametrize("history", [{"val_loss_history_it": [20], "val_loss_history": [1.0, 2.0]},
                                     {"val_loss_history_it": ["20"], "val_loss_history": [1.0]},
                                     {"val_loss_history_it": [20], "val_loss_history": [None]},
                                     {"val_loss_history_it": [True], "val_loss_history": [1.0]},
                                     {"val_loss_history_it": 20, "val_loss_history": 1.0}, []])
def test_a_malformed_history_is_ignored_not_trusted(run_dir, history):
    (run_dir / "checkpoint_30.json").write_text(json.dumps(history))
    assert resolve_checkpoint(run_dir) == run_dir / "checkpoint_30.pt"


def test_sample_and_eval_read_the_best_and_train_resumes_the_newest(cli, run_dir):
    evals = {name: cli("eval", "--checkpoint", run_dir / name if name else run_dir).out
             for name in ("", "checkpoint_20.pt", "checkpoint_30.pt")}
    assert evals[""] == evals["checkpoint_20.pt"] != evals["checkpoint_30.pt"]
    samples = {name: cli("sample", "--checkpoint", run_dir / name if name else run_dir, "--seed", 1, "--length", 80).out
               for name in ("", "checkpoint_20.pt", "checkpoint_30.pt")}
    assert samples[""] == samples["checkpoint_20.pt"] != samples["checkpoint_30.pt"]
    resumed = cli("train", "--resume", run_dir, "--max-iters", 40, "--checkpoint-every", 10, "--print-every", 0)
    assert resumed.code == 0, resumed.err
    assert load_checkpoint(run_dir, newest=True).iteration == 40


def test_train_prints_the_best_checkpoint_as_its_result(cli, dataset, tmp_path):
    """A run whose last validation is not its best says so and offers the best to sample."""
    h5, js = dataset
    name = tmp_path / "wobbly"
    result = cli("train", "--input-h5", h5, "--input-json", js, *TINY_MODEL, "--rnn-size", 64,
                 "--learning-rate", 0.02, "--max-iters", 120, "--checkpoint-every", 20, "--checkpoint-name", name)
    assert result.code == 0, result.err
    info = json.loads((tmp_path / "wobbly_120.json").read_text())
    pairs = list(zip(info["val_loss_history_it"], info["val_loss_history"]))
    best_it = min(pairs, key=lambda p: (p[1], -p[0]))[0]
    assert f"sample it with: charrnn sample --checkpoint {name}_{best_it}.pt" in result.out
    assert ("best checkpoint:" in result.out) == (best_it != 120)
    assert resolve_checkpoint(tmp_path) == tmp_path / f"wobbly_{best_it}.pt"
