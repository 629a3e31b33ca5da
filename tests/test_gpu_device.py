"""The checks only a CUDA GPU can answer (marked ``gpu``; they skip without one). Run them with
``scripts/gpu-check.sh``: each test writes what it saw (dtypes, losses, first divergence index,
iterations/s) to ``$CHARRNN_GPU_REPORT/<test>.json`` whether it passes or fails.

``CHARRNN_GPU_DRY_RUN=1`` runs them on the CPU instead (CUDA-only checks are left out): a check
of the tests themselves, for machines without a GPU. See docs/gpu.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from charrnn import load_checkpoint, train
from charrnn.sampling.sampler import Sampler

DRY = os.environ.get("CHARRNN_GPU_DRY_RUN") == "1"
CUDA = torch.cuda.is_available() and not DRY
GPU = 0 if CUDA else -1
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not (CUDA or DRY), reason="needs a CUDA GPU (scripts/gpu-check.sh)")]
SMALL = dict(rnn_size=32, wordvec_size=16, num_layers=2, batch_size=8, seq_length=32, print_every=0, max_epochs=100)


@pytest.fixture
def report(request):
    """A dict the test fills in; written to $CHARRNN_GPU_REPORT/<test>.json even when the test fails."""
    data: dict = {"test": request.node.name, "cuda": CUDA}
    if CUDA:
        data["device"] = torch.cuda.get_device_name(0)
    yield data
    folder = os.environ.get("CHARRNN_GPU_REPORT")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)
        (Path(folder) / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))


def _train(dataset, tmp_path, name, **options):
    h5, js = dataset
    opts = {**SMALL, "gpu": GPU, "input_h5": str(h5), "input_json": str(js),
            "checkpoint_name": str(tmp_path / name), "quiet": True, **options}
    t0 = time.perf_counter()
    result = train(**opts)
    result.seconds = time.perf_counter() - t0
    return result


def _first_difference(a, b) -> int | None:
    """Index of the first unequal element (or the shorter length); None when equal."""
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


def _cpu_only(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c code`` in a process that sees no GPU at all."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def gpu_checkpoint(dataset, tmp_path_factory):
    """One 2 x 64 LSTM trained on the GPU in fp32 (shared by the sampling and eval checks)."""
    tmp = tmp_path_factory.mktemp("gpu_ckpt")
    return _train(dataset, tmp, "shared", rnn_size=64, max_iters=120 if CUDA else 20, checkpoint_every=60, precision="fp32")


# -- G1 ----------------------------------------------------------------------------------------------
def test_gpu_train_tiny(cli, dataset, tmp_path, report):
    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, "--rnn-size", 64, "--wordvec-size", 16,
                 "--num-layers", 2, "--batch-size", 8, "--seq-length", 32, "--max-iters", 80, "--print-every", 0,
                 "--checkpoint-every", 0, "--precision", "fp32", "--gpu", GPU, "--checkpoint-name", tmp_path / "t")
    report["start_line"] = next((line for line in result.out.splitlines() if line.startswith("training ")), None)
    report["exit"], report["stderr"] = result.code, result.err[-2000:]
    assert result.code == 0
    ckpt = tmp_path / "t_80.pt"
    losses = json.loads((tmp_path / "t_80.json").read_text())["train_loss_history"]
    report["loss_first10"], report["loss_last10"] = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    assert report["loss_last10"] < report["loss_first10"] - 0.3
    if CUDA:
        assert "on GPU 0 (" in report["start_line"]
    probe = _cpu_only(
        "import json, torch; from charrnn import load_checkpoint, sample\n"
        f"p = {str(ckpt)!r}; out = {{'cuda': torch.cuda.is_available()}}\n"
        "load_checkpoint(p); out['sample'] = len(sample(p, length=100, seed=1))\n"
        "try:\n    torch.load(p, weights_only=True); out['plain_torch_load'] = 'ok'\n"
        "except Exception as e:\n    out['plain_torch_load'] = repr(e)[:300]\n"
        "print(json.dumps(out))")
    report["cpu_process"] = probe.stdout.strip() or probe.stderr[-2000:]
    assert probe.returncode == 0
    out = json.loads(probe.stdout.splitlines()[-1])
    assert out == {"cuda": False, "sample": 100, "plain_torch_load": "ok"}


# -- G2 ----------------------------------------------------------------------------------------------
def test_gpu_seeded_runs_identical(dataset, tmp_path, report):
    a = _train(dataset, tmp_path, "a", max_iters=24, dropout=0.25, precision="fp32")
    b = _train(dataset, tmp_path, "b", max_iters=24, dropout=0.25, precision="fp32")
    la, lb = a.history.train_loss_history, b.history.train_loss_history
    report.update(losses_a=la, losses_b=lb, first_difference=_first_difference(la, lb),
                  cublas_workspace=os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    assert la == lb


# -- G3 ----------------------------------------------------------------------------------------------
RESUME_CASES = [("lstm", 2, 0.0, "fp32", False), ("lstm", 1, 0.25, "fp32", False), ("lstm", 2, 0.25, "fp32", False),
                ("gru", 2, 0.25, "fp32", False), ("lstm", 2, 0.0, "auto", False), ("lstm", 2, 0.25, "auto", False),
                ("lstm", 2, 0.25, "fp32", True), ("gru", 2, 0.25, "fp16", False)]


@pytest.mark.parametrize("cell, layers, dropout, precision, batchnorm", RESUME_CASES,
                         ids=[f"{c}-L{n}-d{d}-{p}{'-bn' if b else ''}" for c, n, d, p, b in RESUME_CASES])
def test_gpu_resume_exact(dataset, tmp_path, report, cell, layers, dropout, precision, batchnorm):
    opts = dict(model_type=cell, num_layers=layers, dropout=dropout, precision=precision, batchnorm=batchnorm,
                checkpoint_every=8)
    straight = _train(dataset, tmp_path, "straight", max_iters=16, **opts)
    half = _train(dataset, tmp_path, "half", max_iters=8, **opts)
    resumed = train(resume=str(half.checkpoint), max_iters=16, quiet=True)
    ls, lr = straight.history.train_loss_history, resumed.history.train_loss_history
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    differing = [k for k in a.model_state if not torch.equal(a.model_state[k], b.model_state[k])]
    report.update(straight=ls, resumed=lr, first_difference=_first_difference(ls, lr), differing_weights=differing)
    assert ls == lr and not differing


# -- G4 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gpu_auto_precision_dtypes(report, cell):
    from charrnn.model import CharRNN, ModelConfig
    from charrnn.precision import describe_precision, native_bf16, resolve_precision
    from charrnn.training.step import build_optimizer, train_step

    device = torch.device("cuda", 0) if CUDA else torch.device("cpu")
    dtype = resolve_precision("auto", device)
    if CUDA:
        report["capability"] = torch.cuda.get_device_capability(0)
        assert (dtype is torch.bfloat16) == (torch.cuda.get_device_capability(0) >= (8, 0)) == native_bf16(device)
    dtype = dtype or torch.bfloat16
    model = CharRNN(ModelConfig(40, cell, 16, 64, 2, 0.25, False)).to(device).train()
    seen = {}
    model.rnns[0].register_forward_hook(lambda m, i, o: seen.setdefault("fused_rnn_out", str(o[0].dtype)))
    model.head.register_forward_hook(lambda m, i, o: seen.setdefault("head_out", str(o.dtype)))
    x, y = (torch.randint(40, (8, 32), device=device) for _ in range(2))
    optimizer = build_optimizer(model, 2e-3, device)
    out = train_step(model, optimizer, x, y, None, 5.0, dtype)
    model.eval()
    from charrnn.precision import autocast
    with torch.no_grad(), autocast(device, dtype):
        model(x)  # eval takes the fused call: its hook records the recurrent dtype
    grads = [p.grad for p in model.parameters()]
    report.update(seen, state=[str(t.dtype) for t in out.state], loss=out.loss,
                  grads={str(g.dtype) for g in grads}, start_line=describe_precision("auto", dtype, device))
    assert all(t.dtype == torch.float32 for t in out.state)
    assert seen["fused_rnn_out"] == "torch.float32"
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    if CUDA:
        assert seen["head_out"] == "torch.bfloat16"
        assert "fp32 recurrent layers" in report["start_line"]


# -- G5 ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_gpu_precision_quality(dataset, tmp_path, report):
    runs = {}
    for precision in ("fp32", "auto", "fp16"):
        r = _train(dataset, tmp_path, precision, rnn_size=128, batch_size=50, seq_length=50,
                   max_iters=300 if CUDA else 20, checkpoint_every=0, precision=precision)
        runs[precision] = dict(train=float(np.mean(r.history.train_loss_history[-20:])), val=r.val_loss,
                               it_per_s=len(r.history.train_loss_history) / r.seconds)
    report.update(runs)
    assert all(np.isfinite(v["val"]) for v in runs.values())
    if CUDA:
        assert runs["auto"]["val"] <= runs["fp32"]["val"] + 0.05
        assert runs["fp16"]["val"] <= runs["fp32"]["val"] + 0.05


# -- G6 ----------------------------------------------------------------------------------------------
def test_gpu_eval_matches_validation(gpu_checkpoint, dataset, report):
    from charrnn.evaluation import evaluate_checkpoint

    h5, js = dataset
    trained = gpu_checkpoint.val_loss
    on_gpu = evaluate_checkpoint(gpu_checkpoint.checkpoint, str(h5), "val", str(js), gpu=GPU).loss
    on_cpu = evaluate_checkpoint(gpu_checkpoint.checkpoint, str(h5), "val", str(js), gpu=-1).loss
    report.update(training_val=trained, eval_gpu=on_gpu, eval_cpu=on_cpu)
    assert abs(on_gpu - trained) <= 1e-6
    assert abs(on_cpu - trained) <= 5e-3


# -- G7 ----------------------------------------------------------------------------------------------
def test_gpu_sample_vs_cpu_engine(gpu_checkpoint, report, monkeypatch):
    import contextlib

    from charrnn import precision

    path = gpu_checkpoint.checkpoint
    gpu, cpu = Sampler.from_checkpoint(path, gpu=GPU, backend="torch"), Sampler.from_checkpoint(path, gpu=-1)
    a_gpu, a_cpu = gpu.complete(300, argmax=True), cpu.complete(300, argmax=True)
    params = dict(temperature=0.9, top_k=8, top_p=0.95, seed=3)
    exact_gpu, engine = gpu.complete(1000, **params), cpu.complete(1000, **params)
    with monkeypatch.context() as m:  # the sampler as it was: TF32 left on
        m.setattr(precision, "exact_fp32", lambda device: contextlib.nullcontext())
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
            tf32_gpu = gpu.complete(1000, **params)
    x = torch.randint(len(gpu.vocab), (1, 200))
    with torch.inference_mode():
        ref = cpu_model_scores(path, x)
        with precision.exact_fp32(gpu.device):
            exact = gpu.model(x.to(gpu.device))[0].float().cpu()
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
            tf32 = gpu.model(x.to(gpu.device))[0].float().cpu()
    many = gpu.generate_many(3, 300, seed=3)
    singles = [gpu.complete(300, seed=3 + j) for j in range(3)]
    report.update(argmax_equal=a_gpu == a_cpu, argmax_first_difference=_first_difference(a_gpu, a_cpu),
                  tf32_off_first_difference=_first_difference(exact_gpu, engine),
                  tf32_on_first_difference=_first_difference(tf32_gpu, engine),
                  max_logit_diff_tf32_off=float((exact - ref).abs().max()),
                  max_logit_diff_tf32_on=float((tf32 - ref).abs().max()),
                  rows_equal_singles=[many[j] == singles[j] for j in range(3)])
    assert a_gpu == a_cpu
    assert exact_gpu == engine
    assert report["max_logit_diff_tf32_off"] < 1e-3
    assert all(report["rows_equal_singles"])


def cpu_model_scores(path, x: torch.Tensor) -> torch.Tensor:
    model = load_checkpoint(path).build_model("cpu").eval()
    return model(x)[0].float()


# -- G8 ----------------------------------------------------------------------------------------------
def test_gpu_sample_cli(gpu_checkpoint, report):
    def run(gpu):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "charrnn", "sample", "--checkpoint", str(gpu_checkpoint.checkpoint),
                            "--gpu", str(gpu), "--seed", "1", "--length", "2000", "--verbose", "1"],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return r, time.perf_counter() - t0

    (on_gpu, t_gpu), (on_cpu, t_cpu) = run(GPU), run(-1)
    bad, _ = run(7)
    report.update(gpu_stderr=on_gpu.stderr[-500:], cpu_stderr=on_cpu.stderr[-500:], gpu_process_s=t_gpu,
                  cpu_process_s=t_cpu, same_text=on_gpu.stdout == on_cpu.stdout, bad_gpu=bad.stderr.strip()[-300:])
    assert on_gpu.returncode == 0 and len(on_gpu.stdout.rstrip("\n")) >= 1990
    assert bad.returncode != 0 and bad.stderr.startswith("charrnn: error:") and len(bad.stderr.splitlines()) == 1


# -- G9 ----------------------------------------------------------------------------------------------
def test_gpu_serve(gpu_checkpoint, report):
    code = (
        "import asyncio, json, sys, httpx\n"
        "from charrnn.serve import create_app\n"
        "from charrnn import sample\n"
        f"p = {str(gpu_checkpoint.checkpoint)!r}\n"
        "app = create_app([p], log=lambda m: None)\n"
        "async def go():\n"
        "    t = httpx.ASGITransport(app=app)\n"
        "    async with httpx.AsyncClient(transport=t, base_url='http://test') as c:\n"
        "        r = await c.post('/v1/completions', json={'prompt': '', 'max_tokens': 200, 'seed': 5})\n"
        "        return r.json()['choices'][0]['text']\n"
        "text = asyncio.run(go())\n"
        "cuda = 'torch' in sys.modules and sys.modules['torch'].cuda.is_initialized()\n"
        "print(json.dumps({'text': text, 'cuda_initialized': cuda, 'cpu': sample(p, length=200, seed=5)}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    report["stderr"] = r.stderr[-2000:]
    assert r.returncode == 0
    out = json.loads(r.stdout.splitlines()[-1])
    report.update(cuda_initialized=out["cuda_initialized"], equal=out["text"] == out["cpu"])
    assert not out["cuda_initialized"] and out["text"]  # serve samples with the CPU engine only


# -- G10 ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_gpu_bench_quick(report, tmp_path):
    folder = Path(os.environ.get("CHARRNN_GPU_REPORT") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "bench-gpu.json"
    r = subprocess.run([sys.executable, "-m", "charrnn", "bench", "--quick", "--gpu", str(GPU), "-o", str(out)],
                       capture_output=True, text=True, timeout=400, env={**os.environ, "PYTHONPATH": str(ROOT)})
    report.update(stdout=r.stdout[-4000:], stderr=r.stderr[-2000:])
    assert r.returncode == 0
    result = json.loads(out.read_text())
    rows = result["training"]
    report["rows"] = [{k: row.get(k) for k in ("layers", "rnn_size", "precision", "ms_per_iter", "pct_fp32_peak",
                                                "error")} for row in rows]
    assert rows and not [row for row in rows if "error" in row]
    assert all(row["ms_per_iter"] > 0 for row in rows)
    if CUDA:
        assert "gpu_sampling" in result
        assert all(row["pct_fp32_peak"] < 100 for row in rows if row["precision"] == "fp32")


# -- G11 ---------------------------------------------------------------------------------------------
DDP_JOB = """
import json, sys
import torch.distributed as dist
from charrnn.training import distributed
distributed.World.distributed = property(lambda self: True)  # a world of one, through the real DDP path
seen = []
original_init = distributed.init
def init(world, device):
    original_init(world, device)
    seen.append(dist.get_backend())
distributed.init = init
from charrnn import train
args = json.loads(sys.argv[1])
first = train(**args, max_iters=8)
second = train(resume=str(first.checkpoint), max_iters=16, quiet=True)
print(json.dumps({"losses": second.history.train_loss_history, "backends": seen}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gpu_ddp_one_rank_nccl(dataset, tmp_path, report):
    h5, js = dataset
    plain = _train(dataset, tmp_path, "plain", max_iters=16, checkpoint_every=8, dropout=0.0, precision="fp32")
    args = {**SMALL, "gpu": GPU, "input_h5": str(h5), "input_json": str(js), "checkpoint_every": 8,
            "checkpoint_name": str(tmp_path / "ddp"), "quiet": True, "dropout": 0.0, "precision": "fp32"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    r = subprocess.run([sys.executable, "-c", DDP_JOB, json.dumps(args)], capture_output=True, text=True,
                       timeout=300, env=env)
    report["stderr"] = r.stderr[-3000:]
    assert r.returncode == 0
    out = json.loads(r.stdout.splitlines()[-1])
    report.update(out, plain=plain.history.train_loss_history,
                  first_difference=_first_difference(out["losses"], plain.history.train_loss_history))
    assert np.allclose(out["losses"], plain.history.train_loss_history, rtol=1e-5, atol=1e-6)
    assert out["backends"] == (["nccl", "nccl"] if CUDA else ["gloo", "gloo"])


# -- G12 ---------------------------------------------------------------------------------------------
def test_gpu_benchmark_flags(dataset, tmp_path, report):
    r = _train(dataset, tmp_path, "bench", max_iters=12, speed_benchmark=True, memory_benchmark=True,
               checkpoint_every=0)
    times, memory = r.history.forward_backward_times, r.history.memory_usage
    total = torch.cuda.get_device_properties(0).total_memory if CUDA else float("inf")
    report.update(ms=times, memory=memory, monotone=all(a <= b for a, b in zip(memory, memory[1:])))
    assert len(times) == len(memory) == 12
    assert all(t > 0 for t in times) and all(0 < m <= total for m in memory)


# -- G13 ---------------------------------------------------------------------------------------------
def test_gpu_recipe_calibration(report):
    from charrnn.training import recipe

    device = torch.device("cuda", 0) if CUDA else torch.device("cpu")
    t0 = time.perf_counter()
    speeds, threads = recipe.calibrate(65, device, torch.bfloat16 if CUDA else None, seconds=6.0)
    report.update(seconds=time.perf_counter() - t0, threads=threads,
                  speeds={f"{s.num_layers}x{s.rnn_size}/b{s.batch_size}": v for s, v in speeds.items()})
    assert len(speeds) >= (3 if CUDA else 1)
    if CUDA:
        assert speeds[recipe.CANDIDATES[0]] > 20


# -- G14 ---------------------------------------------------------------------------------------------
def test_gpu_checkpoint_resumes_on_cpu(dataset, tmp_path, report):
    from charrnn.training.loop import Trainer
    from charrnn.training.options import resolve_train_config

    h5, js = dataset
    config = resolve_train_config({**SMALL, "gpu": GPU, "input_h5": str(h5), "input_json": str(js), "max_iters": 40,
                                   "checkpoint_every": 0, "precision": "auto", "dropout": 0.25,
                                   "checkpoint_name": str(tmp_path / "mid")})
    trainer = Trainer(config, progress_bar=False, quiet=True)

    class StopAt5:
        def on_step(self, step):
            if step.i == 5:
                trainer.request_stop()

    trainer.extra_subscribers.append(StopAt5())
    mid = trainer.run()
    ts = load_checkpoint(mid.checkpoint).train_state
    report["saved_state"] = None if ts.get("state") is None else [str(t.dtype) for t in ts["state"]]
    resumed = train(resume=str(mid.checkpoint), max_iters=10, gpu=-1, precision="fp32", quiet=True)
    report["resumed_losses"] = resumed.history.train_loss_history
    assert mid.iterations == 5 and resumed.iterations == 10
    assert report["saved_state"] == ["torch.float32", "torch.float32"]


# -- G15 ---------------------------------------------------------------------------------------------
def test_gpu_lr_find(dataset, report):
    from charrnn.lr_find import lr_find
    from charrnn.training.options import resolve_train_config

    h5, js = dataset
    for precision in ("auto", "fp16"):
        config = resolve_train_config({**SMALL, "gpu": GPU, "input_h5": str(h5), "input_json": str(js),
                                       "precision": precision})
        result = lr_find(config, num_iters=30)
        report[precision] = dict(suggestion=result.suggestion, last_loss=result.losses[-1])
        assert result.suggestion is not None and np.isfinite(result.suggestion)


def test_gpu_fp16_step(report):
    from charrnn.model import ModelConfig
    from charrnn.precision import grad_scaler
    from charrnn.training.step import build_model, build_optimizer, train_step

    device = torch.device("cuda", 0) if CUDA else torch.device("cpu")
    model = build_model(ModelConfig(40, "lstm", 16, 64, 2, 0.0, False), device)
    optimizer = build_optimizer(model, 2e-3, device)
    scaler = grad_scaler(device, torch.float16)
    x, y = (torch.randint(40, (8, 32), device=device) for _ in range(2))
    out = train_step(model, optimizer, x, y, None, 5.0, torch.float16, None, scaler)
    grads = {name: p.grad for name, p in model.named_parameters()}
    report.update(loss=out.loss, scale=scaler.get_scale(), grad_dtypes=sorted({str(g.dtype) for g in grads.values()}),
                  all_zero=[n for n, g in grads.items() if not g.any()])
    assert np.isfinite(out.loss) and not report["all_zero"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


# -- G16 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [5, 16])
def test_gpu_rng_cuda_hostile(cli, dataset, tmp_path, report, size):
    """5 bytes: refused by the schema; 16 bytes of 0xFF: a state CUDA's generator may accept or refuse;
    either way a one-line error or a clean resume, never an internal error."""
    run = _train(dataset, tmp_path, "h", max_iters=4, checkpoint_every=4)
    payload = torch.load(run.checkpoint, weights_only=True)
    payload["train_state"]["rng_cuda"] = torch.full((size,), 255, dtype=torch.uint8)
    torch.save(payload, run.checkpoint)
    result = cli("train", "--resume", run.checkpoint, "--max-iters", 6, "--gpu", GPU)
    report.update(exit=result.code, stderr=result.err[-1000:])
    assert "internal error" not in result.err and "Traceback" not in result.err
    if size == 5:
        assert result.code != 0 and "rng_cuda" in result.err and len(result.err.strip().splitlines()) == 1
