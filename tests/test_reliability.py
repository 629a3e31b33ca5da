"""Faults and hostile input: signals, hard kills, failed writes, retention, and a bad-input matrix."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from charrnn import load_checkpoint, train
from charrnn.checkpoint import existing_checkpoints

from .conftest import TINY_MODEL, assert_one_line_error


def start_training(dataset, name, *extra) -> subprocess.Popen:
    h5, js = dataset
    args = [sys.executable, "-m", "charrnn", "train", "--input-h5", h5, "--input-json", js, *TINY_MODEL[:-2],
            "--print-every", "1", "--checkpoint-name", name, *extra]
    return subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_iterations(proc: subprocess.Popen, count: int = 3) -> None:
    seen = 0
    for line in proc.stdout:
        if line.startswith("Epoch"):
            seen += 1
            if seen >= count:
                return
    raise AssertionError(f"training ended before {count} iterations: {proc.stderr.read()}")


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(dataset, tmp_path, sig, code):
    proc = start_training(dataset, tmp_path / "cp", "--max-iters", "100000", "--checkpoint-every", "0")
    wait_for_iterations(proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    saved = existing_checkpoints(tmp_path / "cp")
    assert len(saved) == 1
    assert f"saved {saved[0]}; resume with: charrnn train --resume {saved[0]}" in err
    resumed = train(resume=str(saved[0]), max_iters=load_checkpoint(saved[0]).iteration + 2, quiet=True)
    assert resumed.iterations == load_checkpoint(saved[0]).iteration + 2


@pytest.mark.slow
def test_second_interrupt_quits_at_once_without_damage(dataset, tmp_path):
    proc = start_training(dataset, tmp_path / "cp", "--max-iters", "100000", "--checkpoint-every", "2")
    wait_for_iterations(proc, 5)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    for path in existing_checkpoints(tmp_path / "cp"):
        load_checkpoint(path)  # every checkpoint left behind is whole
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_twenty_hard_kills_never_lose_the_run(dataset, tmp_path):
    """SIGKILL at 20 random moments (many inside checkpoint writes); each time the newest loads and resumes."""
    rng = random.Random(1234)
    name = tmp_path / "cp"
    proc = start_training(dataset, name, "--max-iters", "100000", "--checkpoint-every", "1")
    kills, iterations = 0, []
    while kills < 20:
        time.sleep(rng.uniform(0.0, 0.6))
        if not existing_checkpoints(name):  # the first process must write one before a kill counts
            time.sleep(0.2)
            continue
        proc.kill()
        proc.wait()
        kills += 1
        newest = existing_checkpoints(name)[-1]
        iterations.append(load_checkpoint(newest).iteration)
        proc = start_training(dataset, name, "--resume", newest)
        wait_for_iterations(proc, 1)
    proc.kill()
    proc.wait()
    newest = existing_checkpoints(name)[-1]
    final = train(resume=str(newest), max_iters=load_checkpoint(newest).iteration + 3, quiet=True)
    assert final.iterations == load_checkpoint(newest).iteration + 3
    assert iterations == sorted(iterations)  # progress is never lost
    print(f"survived {kills} SIGKILLs; checkpoints reached iterations {iterations}")


def test_failed_checkpoint_write_is_clear_and_keeps_the_previous(cli, dataset, tmp_path, monkeypatch):
    import torch

    real_save, calls = torch.save, []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, *TINY_MODEL, "--max-iters", "10",
                 "--checkpoint-every", "5", "--checkpoint-name", tmp_path / "cp")
    assert_one_line_error(result, "iteration 10 not saved", "no space left", "cp_5.pt is intact")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "cp_5.pt").iteration == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp.stats.jsonl", "cp_5.json", "cp_5.pt"]


def test_keep_last_and_keep_best(tiny_train, tmp_path):
    result = tiny_train("cp", max_iters=12, checkpoint_every=2, keep_last=2, keep_best=True, learning_rate=0.5,
                        max_loss_factor=0)
    h = result.history
    best = h.val_loss_history_it[int(np.argmin(h.val_loss_history))]
    kept = {load_checkpoint(p).iteration for p in existing_checkpoints(tmp_path / "cp")}
    assert kept == {10, 12} | {best}


def test_patience_stops_early(tiny_train):
    result = tiny_train("cp", max_iters=400, checkpoint_every=2, patience=2, learning_rate=3.0, max_loss_factor=0)
    assert result.iterations < 400
    v = result.history.val_loss_history
    assert min(v[-2:]) >= min(v[:-2])


# -- the bad-input matrix ----------------------------------------------------------------------
def test_one_repeated_character(cli, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("a" * 1000)
    assert_one_line_error(cli("preprocess", "--input-txt", path), "one character repeated")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(cli, tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("abc" * 100)
    path.chmod(0)
    assert_one_line_error(cli("preprocess", "--input-txt", path), "not readable")


def _h5(tmp_path, **datasets):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data)
    return path


@pytest.mark.parametrize("datasets,fragment", [
    (dict(train=np.ones(500, np.uint8)), "no '/val'"),
    (dict(train=np.ones(500, np.float32), val=np.ones(100, np.float32)), "integer"),
    (dict(train=np.full(500, 200, np.uint8), val=np.ones(100, np.uint8)), "outside"),
    (dict(train=np.zeros(500, np.uint8), val=np.ones(100, np.uint8)), "outside"),
])
def test_broken_hdf5(cli, dataset, tmp_path, datasets, fragment):
    _, js = dataset
    bad = _h5(tmp_path, **datasets)
    result = cli("train", "--input-h5", bad, "--input-json", js, "--gpu", "-1", "--checkpoint-name", tmp_path / "c")
    assert_one_line_error(result, fragment)


def test_resume_with_a_different_vocabulary(cli, trained, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("completely different text: 0123456789\n" * 60)
    assert cli("preprocess", "--input-txt", other, "--quiet").code == 0
    result = cli("train", "--resume", trained, "--input-h5", tmp_path / "other.h5",
                 "--input-json", tmp_path / "other.json")
    assert_one_line_error(result, "different vocabulary")


def test_init_from_something_that_is_not_a_checkpoint(cli, dataset, tmp_path):
    h5, js = dataset
    bogus = tmp_path / "bogus_1.pt"
    bogus.write_text(json.dumps({"hello": 1}))
    result = cli("train", "--input-h5", h5, "--input-json", js, "--init-from", bogus, "--gpu", "-1",
                 "--checkpoint-name", tmp_path / "c")
    assert_one_line_error(result, "bogus_1.pt")
