"""Precision: hardware detection, what ``auto`` picks on each kind of machine, and the bf16 path.

Each path is forced with ``CHARRNN_CPU_FEATURES`` so that an AMX machine also runs the AVX2-only
choice, and the bf16 kernel tests skip where oneDNN cannot run bf16 at all.
"""

from __future__ import annotations

import copy

import pytest
import torch

from charrnn import load_checkpoint, train
from charrnn.hardware import ENV_OVERRIDE, cpu_info, parse_flags
from charrnn.model import CharRNN, ModelConfig
from charrnn.precision import autocast, bf16_lstm_active, resolve_precision
from charrnn.training.options import TrainConfig

from .conftest import TINY_MODEL

CPU = torch.device("cpu")
AMX = "fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile"
AVX2 = "fpu sse2 fma avx2"
ONEDNN_BF16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
needs_bf16 = pytest.mark.skipif(not ONEDNN_BF16, reason="oneDNN has no bf16 kernels on this CPU")


def test_flags_name_the_features():
    assert parse_flags(AMX) == {"avx2", "avx512", "avx512_bf16", "amx_bf16"}
    assert parse_flags(AVX2) == {"avx2"}
    assert parse_flags("sse2, neon") == set()


@pytest.mark.parametrize("flags, native", [(AMX, True), ("avx2 avx512f avx512_bf16", True),
                                           ("avx2 avx512f", False), (AVX2, False), ("none", False)])
def test_override_decides_native_bf16(monkeypatch, flags, native):
    monkeypatch.setenv(ENV_OVERRIDE, flags)
    info = cpu_info()
    assert info.overridden and info.native_bf16 is native
    assert info.model and info.model in info.describe()
    assert ("AVX-512" in info.describe()) is ("avx512f" in flags)


def test_auto_is_bf16_only_where_native(monkeypatch):
    monkeypatch.setenv(ENV_OVERRIDE, AVX2)
    assert resolve_precision("auto", CPU) is None
    assert resolve_precision("bf16", CPU) is torch.bfloat16
    monkeypatch.setenv(ENV_OVERRIDE, AMX)
    assert resolve_precision("auto", CPU) is (torch.bfloat16 if torch.backends.mkldnn.is_available() else None)
    assert resolve_precision("fp32", CPU) is None
    assert TrainConfig().precision == "auto"


@pytest.mark.parametrize("flags, expected", [(AVX2, "precision fp32 (auto: no native bf16 on this CPU)"),
                                             (AMX, "precision bf16 autocast (auto: native bf16 on this CPU)")])
def test_start_line_names_the_choice(cli, dataset, tmp_path, monkeypatch, flags, expected):
    monkeypatch.setenv(ENV_OVERRIDE, flags)
    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, *TINY_MODEL, "--max-iters", 2,
                 "--checkpoint-name", tmp_path / "cv")
    assert result.code == 0, result.err
    assert expected in result.out.splitlines()[0]


def _grads(model, x, y, state, dtype):
    model.zero_grad()
    with autocast(CPU, dtype):
        loss, new_state = model.loss(x, y, state)
    loss.backward()
    return loss.item(), new_state, [p.grad.clone() for p in model.parameters()]


@needs_bf16
@pytest.mark.parametrize("layers", [1, 2])
def test_bf16_lstm_matches_fp32_closely(monkeypatch, layers):
    monkeypatch.setenv(ENV_OVERRIDE, AMX)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(30, "lstm", 8, 32, layers))
    x, y = torch.randint(30, (4, 12)), torch.randint(30, (4, 12))
    state = tuple(torch.randn(layers, 4, 32) * 0.3 for _ in range(2))
    ref_loss, ref_state, ref = _grads(model, x, y, state, None)
    with autocast(CPU, torch.bfloat16):
        assert bf16_lstm_active(CPU)
    loss, new_state, got = _grads(model, x, y, state, torch.bfloat16)
    assert loss == pytest.approx(ref_loss, rel=0.01)
    assert all(s.dtype == torch.float32 and s.shape == r.shape for s, r in zip(new_state, ref_state))
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32
        assert (g - r).norm() <= 0.03 * r.norm() + 1e-6


def test_avx2_machine_takes_plain_autocast(monkeypatch):
    monkeypatch.setenv(ENV_OVERRIDE, AVX2)
    with autocast(CPU, torch.bfloat16):
        assert not bf16_lstm_active(CPU)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(30, "lstm", 8, 32, 2))
    x, y = torch.randint(30, (4, 12)), torch.randint(30, (4, 12))
    ref_loss, _, _ = _grads(model, x, y, None, None)
    loss, _, grads = _grads(model, x, y, None, torch.bfloat16)
    assert loss == pytest.approx(ref_loss, rel=0.02) and all(g.dtype == torch.float32 for g in grads)


def test_fp32_is_untouched_by_the_bf16_path(monkeypatch):
    """--precision fp32 runs plain PyTorch: identical to calling the model outside any autocast."""
    monkeypatch.setenv(ENV_OVERRIDE, AMX)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(30, "lstm", 8, 32, 2))
    twin = copy.deepcopy(model)
    x, y = torch.randint(30, (4, 12)), torch.randint(30, (4, 12))
    loss, _, grads = _grads(model, x, y, None, resolve_precision("fp32", CPU))
    plain = twin.loss(x, y)[0]
    plain.backward()
    assert loss == plain.item()
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, twin.parameters()))


def _run(dataset, tmp_path, name, **options):
    h5, js = dataset
    return train(input_h5=str(h5), input_json=str(js), rnn_size=32, wordvec_size=8, num_layers=2, batch_size=4,
                 seq_length=16, gpu=-1, print_every=0, checkpoint_name=str(tmp_path / name), quiet=True, **options)


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_bf16), "auto"])
def test_resume_is_exact_in_every_precision(dataset, tmp_path, precision):
    opts = dict(precision=precision, dropout=0.2, checkpoint_every=8, max_epochs=100)
    straight = _run(dataset, tmp_path, "straight", max_iters=16, **opts)
    half = _run(dataset, tmp_path, "half", max_iters=8, **opts)
    resumed = train(resume=str(half.checkpoint), max_iters=16, quiet=True)
    assert resumed.history.train_loss_history == straight.history.train_loss_history
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)


@needs_bf16
def test_bf16_checkpoint_keeps_fp32_weights_and_keys(dataset, tmp_path):
    fp32 = load_checkpoint(_run(dataset, tmp_path, "a", precision="fp32", max_iters=3).checkpoint)
    bf16 = load_checkpoint(_run(dataset, tmp_path, "b", precision="bf16", max_iters=3).checkpoint)
    assert list(bf16.model_state) == list(fp32.model_state)
    assert all(t.dtype == torch.float32 for t in bf16.model_state.values())
    assert any(not torch.equal(fp32.model_state[k], bf16.model_state[k]) for k in fp32.model_state)


def test_bench_table_names_the_machine_and_the_ratios():
    from charrnn.bench import to_markdown

    row = dict(layers=2, rnn_size=512, batch=50, ms_per_iter=100.0, chars_per_s=25_000.0, gflops=500.0,
               pct_fp32_peak=170.0, pct_bf16_peak=25.0, plain_ms_per_iter=300.0, speedup_vs_plain=3.0)
    result = {"cpu_description": "Some Xeon (AVX2, AVX-512, AVX512-BF16, AMX-BF16)", "threads": 2, "device": "CPU (2 threads)",
              "torch": "2.x", "date": "today", "native_bf16": True, "auto_precision": "bf16",
              "peaks": {"fp32": 300.0, "bf16": 2000.0},
              "training": [{**row, "precision": "fp32", "auto": False}, {**row, "precision": "bf16", "auto": True}]}
    text = to_markdown(result)
    assert text.startswith("charrnn bench on Some Xeon (AVX2, AVX-512, AVX512-BF16, AMX-BF16), CPU (2 threads)")
    assert "fp32 300 GFLOP/s, bf16 2000 GFLOP/s (6.7x, native)" in text and "trains in bf16 here" in text
    assert "| 2 x 512 | 50 | bf16 (auto) | 100.0 |" in text and "| 25% | 300.0 | 3.00x |" in text
    assert "| 2 x 512 | 50 | fp32 | 100.0 |" in text and "| 170% |" in text


@pytest.mark.parametrize("options, expected", [({}, None), ({"precision": "fp32"}, None), ({"precision": "bf16"},
                                               torch.bfloat16), ({"precision": "int3"}, None), ({"precision": [1]}, None),
                                               ("junk", None)])
def test_recorded_precision_trusts_only_known_values(options, expected):
    from charrnn.precision import recorded_precision
    assert recorded_precision(options, CPU) is expected


def test_eval_matches_training_validation_in_bf16(cli, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_OVERRIDE, AMX)
    result = _run(dataset, tmp_path, "ev", precision="auto", max_iters=6, checkpoint_every=0)
    out = cli("eval", "--checkpoint", result.checkpoint)
    assert out.code == 0, out.err
    assert float(out.out.split("val loss = ")[1].split()[0]) == pytest.approx(result.val_loss, abs=1e-6)
