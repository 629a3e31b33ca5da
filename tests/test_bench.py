"""``charrnn bench``: it measures charrnn's own training step, and its figures agree with each other."""

import json

import pytest
import torch


def test_bench_times_the_training_step_charrnn_train_runs():
    """The benchmarked step is ``train_step`` on ``build_model``/``build_optimizer``: same losses, same weights."""
    from charrnn.bench import D, T, V, charrnn_step_fn
    from charrnn.config import ModelConfig
    from charrnn.training.step import build_model, build_optimizer, train_step

    device = torch.device("cpu")
    torch.manual_seed(0)
    step = charrnn_step_fn(1, 16, device, "fp32", batch=3)
    bench_losses = [step() for _ in range(4)]
    torch.manual_seed(0)
    model = build_model(ModelConfig(V, "lstm", D, 16, 1), device)
    optimizer = build_optimizer(model, 2e-3, device)
    x, y = torch.randint(V, (3, T)), torch.randint(V, (3, T))
    state, losses = None, []
    for _ in range(4):
        out = train_step(model, optimizer, x, y, state, grad_clip=5.0)
        state = out.state
        losses.append(out.loss)
    assert bench_losses == losses
    assert losses[-1] < losses[0]  # it trains: Adam updates on a fixed batch lower its loss


@pytest.mark.slow
def test_bench_quick(cli, tmp_path):
    out = tmp_path / "bench.json"
    result = cli("bench", "--quick", "-o", out)
    assert result.code == 0, result.err
    data = json.loads(out.read_text())
    rows = [r for r in data["training"] if "error" not in r]
    assert {(r["layers"], r["rnn_size"]) for r in rows} == {(2, 128), (2, 512)}
    for r in rows:  # each derived figure follows from the measured time, as the table claims
        seconds = r["ms_per_iter"] / 1000
        assert r["chars_per_s"] == pytest.approx(r["batch"] * 50 / seconds)
        assert r["speedup_vs_plain"] == pytest.approx(r["plain_ms_per_iter"] / r["ms_per_iter"])
        assert r["pct_fp32_peak"] == pytest.approx(100 * r["gflops"] / data["peaks"]["fp32"])
        if r["precision"] == "fp32":
            assert 0 < r["pct_fp32_peak"] < 100  # the matmul peak bounds what a training step attains
        assert f"| {r['layers']} x {r['rnn_size']} | {r['batch']} | {r['precision']}" in result.out
        assert f" | {r['ms_per_iter']:.1f} | {r['chars_per_s'] / 1000:.1f} k |" in result.out
    s = data["sampling"]
    for key in ("charrnn_1_streams", "charrnn_256_streams"):  # each ratio printed is the one measured
        assert f"| {s[key]:,.0f} | {s[key] / s['plain_pytorch_1_stream']:.1f}x |" in result.out
    p = data["preprocess"]
    assert p["mb_per_s"] == pytest.approx(p["corpus_mb"] / p["seconds"], rel=1e-3)
    assert f"`charrnn --help` {data['startup']['help_s']:.2f} s" in result.out
    assert "charrnn / plain" in result.out and data["cpu"] in result.out


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch")
def test_the_fp32_peak_includes_onednn_which_runs_the_lstm(monkeypatch):
    """nn.LSTM's GEMMs run in oneDNN, the BLAS behind ``@`` may run a narrower code path (MKL on AMD):
    the peak a training step is held against must count both."""
    from charrnn import bench

    calls, real = [], torch._C._nn.mkldnn_linear
    monkeypatch.setattr(torch._C._nn, "mkldnn_linear", lambda *a: calls.append(a) or real(*a))
    assert bench.matmul_gflops(torch.float32, torch.device("cpu"), n=32, iters=1) > 0
    assert len(calls) == 2  # the warm-up and one timed run
