"""The GPU fixes whose logic runs on a CPU: the per-layer dropout path, fp32 carried state, fp16's
loss scaler in checkpoints, the calibration's warm-up, generator-state checks, device choice.

What needs a real GPU is in tests/test_gpu_device.py (marked ``gpu``; scripts/gpu-check.sh).
"""

from __future__ import annotations

import pytest
import torch

from charrnn import load_checkpoint, train
from charrnn.errors import CharRNNError, CorruptFile, InvalidInput, Unsupported
from charrnn.model import CharRNN, ModelConfig
from charrnn.precision import describe_precision, exact_fp32, grad_scaler, resolve_precision

from .conftest import train_tiny

CPU = torch.device("cpu")


def _rewrite(path, change) -> None:
    """Edit a checkpoint's payload in place (as a damaged or older file would be)."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


# -- points 3/4: inter-layer dropout layer by layer, outside the fused kernel -----------------------
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("training", [False, True])
def test_layer_by_layer_equals_the_fused_module(cell, training):
    """Same parameters, same keys; in eval the same scores and state, and on the CPU even the same
    dropout masks and gradients in training (both draw from torch's generator in the same order)."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(11, cell, 8, 16, 3, 0.3, False)).train(training)
    keys = list(model.state_dict())
    x = torch.randint(11, (4, 7))
    results = []
    for layerwise in (False, True):
        model.layerwise = layerwise
        torch.manual_seed(5)
        scores, state = model(x)
        scores.square().mean().backward()
        results.append((scores.detach(), state, [p.grad.clone() for p in model.parameters()]))
        model.zero_grad()
    (fused, fused_state, fused_grads), (layers, layer_state, layer_grads) = results
    assert list(model.state_dict()) == keys
    assert torch.equal(fused, layers)
    assert all(torch.equal(a, b) for a, b in zip(fused_state, layer_state))
    assert all(torch.equal(a, b) for a, b in zip(fused_grads, layer_grads))
    assert not training or not torch.equal(fused, model.eval()(x)[0])  # dropout was really on


def test_layer_by_layer_carries_a_given_state():
    torch.manual_seed(1)
    model = CharRNN(ModelConfig(9, "lstm", 8, 12, 2, 0.25, False)).eval()
    x = torch.randint(9, (3, 5))
    _, state = model(x)
    model.layerwise = True
    a = model(x, state)
    model.layerwise = False
    b = model(x, state)
    assert torch.equal(a[0], b[0]) and all(torch.equal(s, t) for s, t in zip(a[1], b[1]))


def test_gpu_devices_choose_the_layer_path_only_where_dropout_needs_it():
    """The rule itself (device types only, no device needed)."""
    model = CharRNN(ModelConfig(9, "gru", 8, 12, 2, 0.25, False))
    cuda, mps = torch.device("cuda", 0), torch.device("mps")
    assert model.train()._layerwise(cuda) and model._layerwise(mps) and not model._layerwise(CPU)
    assert not model.eval()._layerwise(cuda) and model._layerwise(mps)
    assert not CharRNN(ModelConfig(9, "gru", 8, 12, 2, 0.0, False)).train()._layerwise(cuda)
    assert not CharRNN(ModelConfig(9, "gru", 8, 12, 1, 0.25, False)).train()._layerwise(mps)


# -- point 1/9: the carried state is fp32 ----------------------------------------------------------
@pytest.mark.parametrize("cell, batchnorm", [("lstm", False), ("gru", False), ("lstm", True)])
def test_carried_state_comes_back_fp32_whatever_came_in(cell, batchnorm):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(9, cell, 8, 12, 2, 0.0, batchnorm)).eval()
    x = torch.randint(9, (3, 5))
    _, state = model(x)
    half = tuple(t.half() for t in state)  # what a CUDA autocast run of an older charrnn saved
    _, after = model(x, half)
    assert all(t.dtype == torch.float32 for t in after)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            _, state = model(x, state)
        assert all(t.dtype == torch.float32 for t in state)


def test_checkpoint_with_fp16_state_resumes_in_fp32(dataset, tmp_path):
    half = train_tiny(dataset, tmp_path, "half", max_iters=6, checkpoint_every=3, precision="fp32", max_epochs=100)
    # a state carried mid-epoch, as a CUDA autocast run of an older charrnn saved it (1 layer, 4 streams, 16 units)
    _rewrite(half.checkpoint, lambda p: p["train_state"].update(state=[torch.full((1, 4, 16), 0.1).half()] * 2))
    assert load_checkpoint(half.checkpoint).train_state["state"][0].dtype == torch.float16
    resumed = train(resume=str(half.checkpoint), max_iters=9, quiet=True)
    assert resumed.iterations == 9
    state = torch.load(resumed.checkpoint, weights_only=True)["train_state"]["state"]
    assert state is None or all(t.dtype == torch.float32 for t in state)


# -- point 2: fp16 trains with a loss scaler, whose state checkpoints keep --------------------------
def test_fp16_keeps_its_loss_scaler_and_resumes_exactly(dataset, tmp_path):
    opts = dict(precision="fp16", num_layers=2, dropout=0.2, checkpoint_every=4, max_epochs=100)
    straight = train_tiny(dataset, tmp_path, "straight", max_iters=8, **opts)
    half = train_tiny(dataset, tmp_path, "half", max_iters=4, **opts)
    scaler = load_checkpoint(half.checkpoint).train_state["scaler"]
    assert set(scaler) >= {"scale", "_growth_tracker"} and scaler["scale"] > 1
    resumed = train(resume=str(half.checkpoint), max_iters=8, quiet=True)
    assert resumed.history.train_loss_history == straight.history.train_loss_history
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
    assert a.train_state["scaler"] == b.train_state["scaler"]
    assert "scaler" not in load_checkpoint(train_tiny(dataset, tmp_path, "f", max_iters=2, precision="fp32")
                                           .checkpoint).train_state


@pytest.mark.parametrize("damage", [{"scale": float("nan")}, {"scale": -1.0}, {"_growth_tracker": "x"},
                                    {"unknown": 1.0}])
def test_a_damaged_scaler_state_names_its_field(dataset, tmp_path, damage):
    run = train_tiny(dataset, tmp_path, "s", max_iters=2, precision="fp16")
    _rewrite(run.checkpoint, lambda p: p["train_state"]["scaler"].update(damage))
    with pytest.raises(CorruptFile, match=r"train_state\.scaler"):
        load_checkpoint(run.checkpoint)


def test_the_scaler_skips_a_step_whose_gradients_overflow():
    torch.manual_seed(0)
    from charrnn.training.step import build_model, build_optimizer, train_step
    model = build_model(ModelConfig(9, "lstm", 8, 12, 1), CPU)
    optimizer = build_optimizer(model, 1e-2, CPU)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 100)  # so large that fp16 gradients overflow
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randint(9, (2, 6)), torch.randint(9, (2, 6))
    train_step(model, optimizer, x, y, None, 5.0, torch.float16, None, scaler)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))  # skipped, weights intact
    assert scaler.get_scale() == 2.0 ** 99  # backed off
    assert grad_scaler(CPU, torch.float16).get_scale() == 2.0 ** 16
    assert grad_scaler(CPU, torch.bfloat16) is None and grad_scaler(CPU, None) is None


# -- the start line and the precision rules on a GPU (device types only) ----------------------------
def test_start_line_tells_what_runs_in_which_precision():
    cuda = torch.device("cuda", 0)
    assert describe_precision("auto", torch.bfloat16, cuda) == \
        "bf16 output layer, fp32 recurrent layers (auto: native bf16 on this GPU)"
    assert describe_precision("fp16", torch.float16, cuda) == "fp16 output layer, fp32 recurrent layers with loss scaling"
    assert describe_precision("fp16", torch.float16, CPU) == "fp16 output layer, fp32 recurrent layers with loss scaling"
    assert describe_precision("bf16", torch.bfloat16, CPU) == "bf16 autocast"
    assert describe_precision("fp32", None, cuda) == "fp32"


def test_explicit_bf16_is_refused_below_compute_capability_8(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    cuda = torch.device("cuda", 0)
    with pytest.raises(InvalidInput, match="compute capability 8.0 or newer .this one is 7.5.") as info:
        resolve_precision("bf16", cuda)
    assert info.value.field == "precision"
    assert resolve_precision("auto", cuda) is None and resolve_precision("fp16", cuda) is torch.float16
    from charrnn.precision import recorded_precision
    assert recorded_precision({"precision": "bf16"}, cuda) is None  # evaluating such a run: fp32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert resolve_precision("bf16", cuda) is torch.bfloat16


def test_exact_fp32_leaves_a_cpu_alone_and_restores_the_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with exact_fp32(CPU):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with exact_fp32(torch.device("cuda", 0)):  # only flags: no CUDA call is made
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


# -- point 5: the calibration warms a GPU up untimed -----------------------------------------------
def _fake_timing(monkeypatch, first_call_s: float):
    """Calibration steps that take no real time; the process's very first step reports ``first_call_s``."""
    from charrnn.training import recipe
    calls = []

    def steps_per_second(shape, vocab_size, seq_length, device, dtype, seconds):
        calls.append((shape, seconds))
        took = first_call_s if len(calls) == 1 else 0.01
        return 1.0 / took, took

    monkeypatch.setattr(recipe, "_steps_per_second", steps_per_second)
    return recipe, calls


def test_gpu_calibration_warms_up_untimed_and_keeps_going(monkeypatch):
    recipe, calls = _fake_timing(monkeypatch, first_call_s=30.0)
    speeds, threads = recipe.calibrate(60, torch.device("mps"), None, seconds=4.0)
    assert calls[0] == (recipe.CANDIDATES[0], 0.0)  # the untimed warm-up
    assert len(speeds) == len(recipe.CANDIDATES)  # the slow first call did not end the calibration
    assert all(v == 100.0 for v in speeds.values()) and threads == torch.get_num_threads()
    shares = [s for _, s in calls[1:]]
    assert shares[0] == pytest.approx(4.0 / len(recipe.CANDIDATES), rel=0.05)  # no one-thread slot on a GPU


def test_cpu_calibration_is_unchanged_by_the_warm_up(monkeypatch):
    recipe, calls = _fake_timing(monkeypatch, first_call_s=30.0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    speeds, threads = recipe.calibrate(60, CPU, None, seconds=4.0)
    n = len(recipe.CANDIDATES)
    assert calls[0][1] == pytest.approx(4.0 / (n + 1), rel=0.05)  # timed at once, one slot for the 1-thread try
    assert calls[1] == (recipe.CANDIDATES[0], calls[1][1]) and threads == 1  # the faster 1-thread run is kept
    assert len(speeds) == n


# -- points 9/12/13: generator states ----------------------------------------------------------------
@pytest.mark.parametrize("size, ok", [(5, False), (0, False), (8, True), (16, True), (17, False)])
def test_rng_cuda_must_be_a_cuda_generator_state(dataset, tmp_path, size, ok):
    run = train_tiny(dataset, tmp_path, "r", max_iters=2)
    _rewrite(run.checkpoint, lambda p: p["train_state"].update(rng_cuda=torch.zeros(size, dtype=torch.uint8)))
    if ok:
        assert load_checkpoint(run.checkpoint).train_state["rng_cuda"].numel() == size
    else:
        with pytest.raises(CorruptFile, match=r"train_state\.rng_cuda"):
            load_checkpoint(run.checkpoint)


def test_rng_mps_is_checked_like_the_others(dataset, tmp_path):
    run = train_tiny(dataset, tmp_path, "m", max_iters=2)
    _rewrite(run.checkpoint, lambda p: p["train_state"].update(rng_mps=torch.zeros(2, 3)))
    with pytest.raises(CorruptFile, match=r"train_state\.rng_mps"):
        load_checkpoint(run.checkpoint)


def test_a_damaged_rng_cuda_is_a_one_line_error_from_the_cli(cli, dataset, tmp_path):
    run = train_tiny(dataset, tmp_path, "c", max_iters=2, max_epochs=100)
    _rewrite(run.checkpoint, lambda p: p["train_state"].update(rng_cuda=torch.zeros(5, dtype=torch.uint8)))
    result = cli("train", "--resume", run.checkpoint, "--max-iters", 4)
    assert result.code != 0 and "Traceback" not in result.err
    assert result.err.startswith("charrnn: error:") and "rng_cuda" in result.err and len(result.err.splitlines()) == 1


# -- point 11: a Mac's --gpu 0 is its Apple GPU; point 20: out of memory in setup ---------------------
def test_gpu_0_means_mps_where_there_is_no_cuda(monkeypatch):
    from charrnn import device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "_mps_available", lambda: True)
    assert device.select_device(0) == torch.device("mps")
    with pytest.raises(CharRNNError, match="--gpu 1: this machine has no CUDA device"):
        device.select_device(1)
    monkeypatch.setattr(device, "_mps_available", lambda: False)
    with pytest.raises(CharRNNError, match="--gpu 0: this machine has no CUDA device"):
        device.select_device(0)


def test_out_of_memory_while_setting_up_is_a_clean_error(dataset, tmp_path, monkeypatch):
    from charrnn.training import loop

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(loop, "build_model", no_memory)
    with pytest.raises(Unsupported, match="out of memory while setting up"):
        train_tiny(dataset, tmp_path, "oom", max_iters=2)


def test_memory_benchmark_units(monkeypatch):
    from charrnn.training import subscribers
    linux = subscribers.resident_peak_bytes()
    assert linux == pytest.approx(subscribers.memory_in_use(CPU), rel=0.01)
    monkeypatch.setattr(subscribers.sys, "platform", "darwin")  # ru_maxrss is bytes there, KiB on Linux
    assert subscribers.resident_peak_bytes() * 1024 == pytest.approx(linux, rel=0.01)


def test_checkpoint_tensors_are_all_on_the_cpu(dataset, tmp_path):
    """What a plain ``torch.load(weights_only=True)`` on a CPU-only machine needs (a GPU run's Adam
    state is moved before saving; here the check that the writer leaves nothing device-bound)."""
    from charrnn.checkpoint import io
    moved = io._on_cpu({"a": [torch.ones(2)], "b": (torch.zeros(1), 3), "c": "x"})
    assert moved["a"][0].device.type == "cpu" and moved["b"][1] == 3 and moved["c"] == "x"
    run = train_tiny(dataset, tmp_path, "cpu", max_iters=2)
    payload = torch.load(run.checkpoint, weights_only=True, map_location="meta")
    assert payload["train_state"]["optimizer"]["state"]


def test_bench_gpu_sampling_row_renders():
    from charrnn.bench import bench_device_sampling, to_markdown
    row = bench_device_sampling(CPU, seconds=0.01)
    assert {"gpu_1_streams", "gpu_64_streams", "cpu_engine_1_streams", "cpu_engine_64_streams"} <= set(row)
    result = {"cpu_description": "Some CPU", "threads": 2, "device": "GPU 0 (Some GPU)", "torch": "2.x",
              "date": "today", "native_bf16": True, "auto_precision": "bf16", "peaks": {"fp32": 1.0, "bf16": 2.0},
              "training": [], "gpu_sampling": {**row, "gpu_1_streams": 50.0, "cpu_engine_1_streams": 100.0}}
    text = to_markdown(result)
    assert "| 1 stream(s) | 50 | 100 | 0.50x |" in text and "8192x8192" in text
