"""The one-shot analysis commands: lr-find, eval and novelty."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from .conftest import TINY, train_two_layers


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
    result = train_two_layers(dataset, tmp_path, max_iters=12, checkpoint_every=0, precision="fp32")
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
