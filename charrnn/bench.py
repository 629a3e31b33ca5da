"""``charrnn bench``: speed figures with same-run references, as a Markdown table and JSON.

Every figure is paired with a reference measured in the same process (matmul peak, a plain
PyTorch training loop, a plain PyTorch sampling loop, torch-rnn's preprocessing loop), so
the ratios mean something on a shared, noisy machine.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from .hardware import cpu_info
from .model import CharRNN, ModelConfig
from .precision import native_bf16, resolve_precision
from .training.step import build_model, build_optimizer, train_step

V, D, N, T = 65, 64, 50, 50


def cpu_name() -> str:
    return cpu_info().model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int | None = None, iters: int = 5) -> float:
    """The best of ``iters`` dense n x n matmuls: the machine's attainable peak. On a GPU n is 8192
    (a 2048 product takes tens of microseconds there: launch time, not arithmetic).

    On the CPU an fp32 step runs GEMMs from two libraries: the BLAS behind ``@`` (MKL in the pip
    wheels) and oneDNN, which runs ``nn.LSTM``. They dispatch differently: MKL picks its code path
    by CPU vendor (on AMD an AVX2 one, half of Zen 5's 512-bit FMA width), oneDNN by the CPU's
    instruction set (AVX-512). So the peak is the better of the two, or a training step could
    appear to beat it.
    """
    n = n or (2048 if device.type == "cpu" else 8192)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    kernels = [lambda: a @ b]
    if device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available():
        a_dnn, b_dnn = a.to_mkldnn(), b.t().contiguous().to_mkldnn()  # linear computes a @ weight.T
        kernels.append(lambda: torch._C._nn.mkldnn_linear(a_dnn, b_dnn, None))
    return max(2 * n ** 3 / _best_seconds(kernel, iters, device) / 1e9 for kernel in kernels)


def _best_seconds(fn, iters: int, device: torch.device) -> float:
    fn()
    _sync(device)
    best = math.inf
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _paired_ms(fns: list, iters: int, warmup: int, device: torch.device) -> list[float]:
    """Median ms of each function, timed in alternation so that machine drift hits all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(iters):
        for fn, ts in zip(fns, times):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) * 1000 for ts in times]


def iteration_flops(layers: int, H: int, batch: int = N, seq: int = T) -> float:
    """6 x the forward multiply-adds of an LSTM language model iteration (the issue's convention)."""
    macs = sum(4 * H * ((D if l == 0 else H) + H) for l in range(layers)) + H * V
    return 6 * macs * batch * seq


class PlainLSTM(nn.Module):
    """The model a user would write from the PyTorch tutorials: the reference."""

    def __init__(self, layers: int, H: int) -> None:
        super().__init__()
        self.embed, self.rnn, self.head = nn.Embedding(V, D), nn.LSTM(D, H, layers, batch_first=True), nn.Linear(H, V)

    def forward(self, x):
        h, _ = self.rnn(self.embed(x))
        return self.head(h)


def plain_step_fn(layers: int, H: int, device: torch.device, batch: int = N):
    model = PlainLSTM(layers, H).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = torch.randint(V, (batch, T), device=device)
    y = torch.randint(V, (batch, T), device=device)

    def step():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()
    return step


def charrnn_step_fn(layers: int, H: int, device: torch.device, precision: str, batch: int = N):
    """charrnn's training iteration, exactly as ``charrnn train`` runs it (the public train_step)."""
    model = build_model(ModelConfig(V, "lstm", D, H, layers), device)
    opt = build_optimizer(model, 2e-3, device)
    dtype = resolve_precision(precision, device)
    x = torch.randint(V, (batch, T), device=device)
    y = torch.randint(V, (batch, T), device=device)
    state = [None]

    def step():
        out = train_step(model, opt, x, y, state[0], grad_clip=5.0, autocast_dtype=dtype)
        state[0] = out.state
        return out.loss
    return step


def bench_training(grid, device, precisions, iters: int, warmup: int, peaks: dict, batch: int = N) -> list[dict]:
    rows = []
    for layers, H in grid:
        flops = iteration_flops(layers, H, batch)
        for precision in precisions:
            try:
                plain_ms, ms = _paired_ms([plain_step_fn(layers, H, device, batch),
                                           charrnn_step_fn(layers, H, device, precision, batch)], iters, warmup, device)
            except RuntimeError as exc:
                rows.append({"layers": layers, "rnn_size": H, "precision": precision, "error": str(exc)[:80]})
                continue
            rows.append({
                "layers": layers, "rnn_size": H, "batch": batch, "precision": precision, "ms_per_iter": ms,
                "chars_per_s": batch * T / (ms / 1000), "gflops": flops / (ms / 1000) / 1e9,
                "pct_fp32_peak": 100 * flops / (ms / 1000) / 1e9 / peaks["fp32"],
                "pct_bf16_peak": 100 * flops / (ms / 1000) / 1e9 / peaks["bf16"] if peaks.get("bf16_native") else None,
                "auto": precision == peaks.get("auto"),
                "plain_ms_per_iter": plain_ms, "speedup_vs_plain": plain_ms / ms,
            })
    return rows


def bench_sampling(seconds: float = 2.0) -> dict:
    """chars/s of charrnn's CPU engine (1 and 256 streams, each backend) against a plain PyTorch step loop."""
    from .sampling.engine import Engine, SamplingParams, choose_backend

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(V, "lstm", D, 128, 2)).eval()
    out = {}
    backends = ["numpy"] + (["numba"] if choose_backend("auto") == "numba" else [])
    for backend in backends:
        for streams in (1, 256):
            engine = Engine.from_model(model, streams, backend)
            slots = [engine.open(SamplingParams(seed=j)) for j in range(streams)]
            engine.generate(slots, 2)  # compile / warm up
            steps = max(1, (20_000 if backend == "numba" else 2_000) // streams)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                engine.generate(slots, steps)
                n += steps
            key = f"charrnn_{streams}_streams" + ("" if backend == backends[-1] else f"_{backend}")
            out[key] = n * streams / (time.perf_counter() - t0)
    out["engine_backend"] = backends[-1]
    plain = PlainLSTM(2, 128).eval()
    with torch.inference_mode():
        x, state, n, t0 = torch.zeros(1, 1, dtype=torch.long), None, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            h, state = plain.rnn(plain.embed(x), state)
            x = torch.multinomial(torch.softmax(plain.head(h[:, -1]), -1), 1)
            n += 1
    out["plain_pytorch_1_stream"] = n / (time.perf_counter() - t0)
    return out


def bench_device_sampling(device: torch.device, seconds: float = 2.0) -> dict:
    """chars/s of ``sample`` on a GPU (the torch model scores, TF32 off) against the CPU engine, 1 and
    64 streams of a 2 x 128 LSTM: whether ``--gpu`` pays for sampling at this size."""
    from .sampling.sampler import Sampler
    from .vocab import Vocabulary

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(V, "lstm", D, 128, 2)).eval()
    vocab = Vocabulary(tuple(range(32, 32 + V)))
    out = {"model": "2 x 128 lstm", "device": str(device)}
    for where, sampler in (("gpu", Sampler(CharRNN(model.config).to(device), vocab, device)),
                           ("cpu_engine", Sampler(model, vocab))):
        if where == "gpu":
            sampler.model.load_state_dict(model.state_dict())
        for streams in (1, 64):
            sampler.generate_many(streams, 8, seed=0)  # warm-up (kernels, compilation)
            n, t0 = 0, time.perf_counter()
            while n == 0 or time.perf_counter() - t0 < seconds:
                sampler.generate_many(streams, 200, seed=n)
                n += 200 * streams
            _sync(device)
            out[f"{where}_{streams}_streams"] = n / (time.perf_counter() - t0)
    return out


_MEMORY_JOB = """
import resource, sys, torch
from charrnn.bench import charrnn_step_fn, plain_step_fn
layers, H, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
step = plain_step_fn(layers, H, torch.device("cpu")) if which == "plain" else \\
    charrnn_step_fn(layers, H, torch.device("cpu"), "fp32")
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def bench_memory(layers: int = 2, H: int = 512) -> dict:
    """Peak resident memory (MB) of a training loop, charrnn's and the plain one, each in a fresh process."""
    out = {}
    for which in ("plain", "charrnn"):
        result = subprocess.run([sys.executable, "-c", _MEMORY_JOB, str(layers), str(H), which],
                                capture_output=True, text=True, check=True)
        out[f"{which}_peak_rss_mb"] = float(result.stdout.split()[-1])
    out["model"] = f"{layers} x {H}"
    return out


def torch_rnn_preprocess_loop(text: str) -> list[int]:
    """torch-rnn's preprocess.py algorithm (two Python passes over characters), the reference."""
    token_to_idx: dict[str, int] = {}
    for ch in text:
        if ch not in token_to_idx:
            token_to_idx[ch] = len(token_to_idx) + 1
    return [token_to_idx[ch] for ch in text]


def bench_preprocess(megabytes: int, workdir: Path) -> dict:
    from .preprocessing import preprocess

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny-shakespeare.txt"
    seed_text = shared.read_bytes() if shared.exists() else (b"The quick brown fox jumps over the lazy dog.\n" * 25000)
    corpus = workdir / "corpus.txt"
    with open(corpus, "wb") as f:
        for _ in range(megabytes * 1_000_000 // len(seed_text) + 1):
            f.write(seed_text)
    size = corpus.stat().st_size
    preprocess(corpus, workdir / "warm.h5", workdir / "warm.json")  # import h5py, warm caches
    t0 = time.perf_counter()
    preprocess(corpus, workdir / "c.h5", workdir / "c.json")
    seconds = time.perf_counter() - t0
    sample = seed_text[:1_000_000].decode("utf-8", errors="ignore")
    t0 = time.perf_counter()
    torch_rnn_preprocess_loop(sample)
    loop_seconds = time.perf_counter() - t0
    return {"corpus_mb": size / 1e6, "seconds": seconds, "mb_per_s": size / 1e6 / seconds,
            "torch_rnn_loop_mb_per_s": len(sample) / 1e6 / loop_seconds}


def bench_startup(workdir: Path) -> dict:
    """Wall time of ``charrnn --help`` and to the first sampled character, in fresh processes."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    helps = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "charrnn", "--help"], capture_output=True, check=True, env=env)
        helps.append(time.perf_counter() - t0)
    from .checkpoint import save_checkpoint
    from .vocab import Vocabulary
    vocab = Vocabulary(tuple(range(32, 32 + V)))
    ckpt = save_checkpoint(workdir / "startup", 1, CharRNN(ModelConfig(V)), vocab, {})
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "sample", "--checkpoint", str(ckpt), "--length", "100000"],
                            stdout=subprocess.PIPE, env=env)
    proc.stdout.read(1)
    first = time.perf_counter() - t0
    proc.kill()
    proc.wait()
    return {"help_s": min(helps), "first_char_s": first}


def machine_line(result: dict) -> str:
    """``Intel Xeon ... (AVX2, AVX-512, AVX512-BF16, AMX-BF16), CPU (2 threads), torch 2.13, date``."""
    return f"charrnn bench on {result['cpu_description']}, {result['device']}, torch {result['torch']}, {result['date']}"


def to_markdown(result: dict) -> str:
    peaks = result["peaks"]
    native = "native" if result["native_bf16"] else "emulated: no native bf16 on this hardware"
    lines = [machine_line(result), "",
             f"matmul {'2048x2048' if result['device'].startswith('CPU') else '8192x8192 (IEEE; fp32 RNNs run TF32)'}: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s "
             f"({peaks['bf16'] / peaks['fp32']:.1f}x, {native}); `--precision auto` trains in "
             f"{result['auto_precision']} here", "",
             "| layers x size | batch | precision | ms/iter | chars/s | GFLOP/s | % of its matmul rate "
             "| plain PyTorch fp32 ms/iter | charrnn / plain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["training"]:
        label = r["precision"] + (" (auto)" if r.get("auto") else "")
        if "error" in r:
            lines.append(f"| {r['layers']} x {r['rnn_size']} | | {label} | failed: {r['error']} | | | | | |")
            continue
        pct = r["pct_bf16_peak"] if r["precision"] == "bf16" and r["pct_bf16_peak"] is not None else r["pct_fp32_peak"]
        lines.append(f"| {r['layers']} x {r['rnn_size']} | {r['batch']} | {label} | {r['ms_per_iter']:.1f} "
                     f"| {r['chars_per_s'] / 1000:.1f} k | {r['gflops']:.0f} | {pct:.0f}% "
                     f"| {r['plain_ms_per_iter']:.1f} | {r['speedup_vs_plain']:.2f}x |")
    if "sampling" in result:
        s = result["sampling"]
        flops = 2 * (128 * 512 + 256 * 512 + 128 * V)  # per character of a 2 x 128 LSTM
        lines += ["", f"| sampling (2 x 128, CPU, engine: {s['engine_backend']}) | chars/s | vs plain PyTorch loop "
                      "| % fp32 matmul rate |", "|---|---|---|---|"]
        for key in [k for k in s if k.startswith(("charrnn_", "plain_"))]:
            pct = 100 * s[key] * flops / 1e9 / result["peaks"]["fp32"] if "peaks" in result else float("nan")
            lines.append(f"| {key.replace('_', ' ')} | {s[key]:,.0f} | {s[key] / s['plain_pytorch_1_stream']:.1f}x "
                         f"| {pct:.1f}% |")
    if "gpu_sampling" in result:
        g = result["gpu_sampling"]
        lines += ["", f"| sampling ({g['model']}) | chars/s on {result['device']} (TF32 off) | chars/s CPU engine "
                      "| GPU / CPU |", "|---|---|---|---|"]
        for streams in (1, 64):
            gpu, cpu = g[f"gpu_{streams}_streams"], g[f"cpu_engine_{streams}_streams"]
            lines.append(f"| {streams} stream(s) | {gpu:,.0f} | {cpu:,.0f} | {gpu / cpu:.2f}x |")
    if "preprocess" in result:
        p = result["preprocess"]
        lines += ["", f"preprocess: {p['corpus_mb']:.0f} MB in {p['seconds']:.2f} s = {p['mb_per_s']:.0f} MB/s "
                      f"(torch-rnn's Python loop: {p['torch_rnn_loop_mb_per_s']:.1f} MB/s, "
                      f"{p['mb_per_s'] / p['torch_rnn_loop_mb_per_s']:.0f}x)"]
    if "memory" in result:
        m = result["memory"]
        lines += [f"peak resident memory, {m['model']} training: charrnn {m['charrnn_peak_rss_mb']:.0f} MB, "
                  f"plain PyTorch loop {m['plain_peak_rss_mb']:.0f} MB"]
    if "startup" in result:
        st = result["startup"]
        lines += [f"start-up: `charrnn --help` {st['help_s']:.2f} s, first sampled character {st['first_char_s']:.2f} s"]
    return "\n".join(lines)


def run_bench(quick: bool = False, gpu: int | None = -1, output: str | None = None,
              batch_sizes: tuple[int, ...] = (N,), log=print, gpu_backend: str = "cuda") -> dict:
    from .device import describe, select_device

    device = select_device(gpu, gpu_backend)
    native = native_bf16(device)
    auto = "fp32" if resolve_precision("auto", device) is None else "bf16"
    peaks = {"fp32": matmul_gflops(torch.float32, device),
             "bf16": matmul_gflops(torch.bfloat16, device, n=None if native or device.type != "cpu" else 512),
             "bf16_native": native, "auto": auto}
    precisions = ["fp32", "bf16"] if native else ["fp32"]
    grid = [(2, 128), (2, 512)] if quick else [(l, h) for l in (1, 2, 3) for h in (64, 128, 256, 512)]
    iters, warmup = (5, 2) if quick else (15, 3)
    cpu = cpu_info()
    result = {"cpu": cpu.model, "cpu_features": sorted(cpu.features), "cpu_description": cpu.describe(),
              "threads": torch.get_num_threads(), "device": describe(device), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "quick": quick, "peaks": peaks,
              "native_bf16": native, "auto_precision": auto, "training": []}
    log(machine_line(result))
    for batch in batch_sizes:
        log(f"training grid, batch {batch} ({len(grid)} sizes x {precisions}) ...")
        result["training"] += bench_training(grid, device, precisions, iters, warmup, peaks, batch)
    peaks["fp32"] = max(peaks["fp32"], matmul_gflops(torch.float32, device))  # the best seen in the run
    if native:
        peaks["bf16"] = max(peaks["bf16"], matmul_gflops(torch.bfloat16, device))
    for row in result["training"]:
        if "gflops" in row:
            row["pct_fp32_peak"] = 100 * row["gflops"] / peaks["fp32"]
            if native:
                row["pct_bf16_peak"] = 100 * row["gflops"] / peaks["bf16"]
    if device.type != "cpu":
        log("sampling on the GPU ...")
        result["gpu_sampling"] = bench_device_sampling(device, 1.0 if quick else 3.0)
    if device.type == "cpu":
        log("sampling ...")
        result["sampling"] = bench_sampling(1.0 if quick else 3.0)
        log("memory ...")
        result["memory"] = bench_memory()
        with tempfile.TemporaryDirectory() as tmp:
            log("preprocessing ...")
            result["preprocess"] = bench_preprocess(20 if quick else 100, Path(tmp))
            log("start-up ...")
            result["startup"] = bench_startup(Path(tmp))
    result["markdown"] = to_markdown(result)
    if output:
        from .fileio import atomic_write
        with atomic_write(output) as f:
            json.dump(result, f, indent=1)
    return result
