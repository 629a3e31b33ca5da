"""What a run records and shows while it trains: histories, weight initialisation, samples, TensorBoard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import train_two_layers


# -- richer history ------------------------------------------------------------------------------------
def test_history_records_learning_rate_gradient_norm_and_update_ratios(dataset, tmp_path):
    result = train_two_layers(dataset, tmp_path, max_iters=30, stats_every=10, lr_schedule="cosine", min_lr=1e-4,
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
    assert train_two_layers(dataset, tmp_path, max_iters=3, weight_init=scheme, checkpoint_every=0).iterations == 3


# -- samples during training -----------------------------------------------------------------------
def test_samples_during_training_leave_training_untouched(dataset, tmp_path, capsys):
    plain = train_two_layers(dataset, tmp_path, "a", max_iters=20, dropout=0.2, checkpoint_every=0)
    sampled = train_two_layers(dataset, tmp_path, "b", max_iters=20, dropout=0.2, checkpoint_every=0, sample_every=5,
                  sample_length=40, quiet=False)
    assert sampled.history.train_loss_history == plain.history.train_loss_history
    out = capsys.readouterr().out
    assert out.count("--- sample at i = ") == 4


# -- TensorBoard -------------------------------------------------------------------------------------------
def test_tensorboard_logs_read_back(dataset, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_two_layers(dataset, tmp_path, max_iters=20, checkpoint_every=10, stats_every=5, sample_every=10, sample_length=20,
        tensorboard=str(tmp_path / "tb"))
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/bpc", "train/learning_rate", "train/grad_norm", "val/loss", "val/bpc",
            "update_ratio/layer1"} <= tags
    assert len(acc.Scalars("train/loss")) == 20 and [e.step for e in acc.Scalars("val/loss")] == [10, 20]
    assert "sample/text_summary" in acc.Tags()["tensors"]
