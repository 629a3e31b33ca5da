"""Sampling speed of the engine's backends against the machine's fp32 matmul rate, and the first-call cost, in one run.

    python benchmarks/sampling.py [--seconds 2] [--rounds 3] [--streams 1 8 64 256] [--checkpoint cv/x.pt]
                                  [--first-length 200000] [--first-many 256 4000]

A 2 x 128 LSTM (65 characters, about 0.41 MFLOP per character) generates with every backend at
1, 8, 64 and 256 streams; each figure is the best of ``--rounds`` rounds that alternate the
backends and the matmul, so load from other processes hits them alike. Printed per row: chars/s
(wall clock), chars per CPU-second of this process (robust to other load for one thread),
GFLOP/s and the share of the fp32 matmul rate (torch, 2048 x 2048, all threads), and the numba /
NumPy ratio. Then how often the two backends' texts differ (64 rows of mixed parameters), and
the first-call time of ``charrnn sample --length 200000`` and ``--num-samples 256 --length 4000``
on a 2 x 128 checkpoint in a fresh numba cache directory (what a fresh install sees), each next
to the same command run again on the now warm cache.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from charrnn.bench import cpu_name, matmul_gflops  # noqa: E402
from charrnn.config import ModelConfig  # noqa: E402
from charrnn.sampling.engine import Engine, PreparedModel, SamplingParams, choose_backend, numpy_weights  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402

V, D, H = 65, 64, 128


def cpu_features() -> str:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    names = [("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX")]
    return ", ".join(label for flag, label in names if flag in flags) or "unknown"


def flops_per_char(config: ModelConfig) -> float:
    G = 4 if config.model_type == "lstm" else (3 if config.model_type == "gru" else 1)
    h = config.rnn_size
    return 2 * (h * G * h + (config.num_layers - 1) * 2 * h * G * h + h * config.vocab_size)


def rate(prepared: PreparedModel, config: ModelConfig, backend: str, streams: int, seconds: float) -> tuple:
    """(chars/s wall, chars per CPU-second) of ``generate`` over ``streams`` rows."""
    engine = Engine(config, prepared, streams, backend)
    slots = [engine.open(SamplingParams(seed=j)) for j in range(streams)]
    engine.generate(slots, 2)  # compile or load the kernels
    steps = max(1, (20_000 if backend == "numba" else 2_000) // streams)
    n, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        engine.generate(slots, steps)
        n += steps * streams
    return n / (time.perf_counter() - wall), n / max(time.process_time() - cpu, 1e-9)


def divergence(prepared: PreparedModel, config: ModelConfig, rows: int = 64, length: int = 5000) -> str:
    mixed = [SamplingParams(1.0), SamplingParams(0.7, top_k=10), SamplingParams(1.0, top_p=0.9),
             SamplingParams(0.8, top_k=20, top_p=0.95)]
    out = []
    for backend in ("numpy", "numba"):
        engine = Engine(config, prepared, rows, backend)
        slots = np.array([engine.open(SamplingParams(**{**vars(mixed[j % 4]), "seed": j})) for j in range(rows)])
        engine.feed(slots, engine.first(slots))
        out.append(engine.generate(slots, length))
    differ = (out[0] != out[1]).any(axis=1)
    first = [int(np.argmax(a != b)) for a, b in zip(out[0][differ], out[1][differ])]
    return (f"{int(differ.sum())} of {rows} rows differ over {length:,} characters"
            + (f" (first difference at character {min(first):,})" if first else ""))


def first_calls(model: CharRNN, length: int, many: tuple[int, int]) -> list[str]:
    """Wall seconds of ``charrnn sample`` commands in a fresh numba cache, then again warm (subprocesses)."""
    from charrnn.checkpoint import save_checkpoint
    from charrnn.vocab import Vocabulary

    lines = []
    with tempfile.TemporaryDirectory() as work:
        ckpt = save_checkpoint(Path(work) / "bench", 1, model, Vocabulary(tuple(range(32, 32 + V))), {})
        env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(work) / "numba"), "PYTHONPATH": str(ROOT)}
        env.pop("CHARRNN_ENGINE", None)
        commands = [["--length", str(length)], ["--num-samples", str(many[0]), "--length", str(many[1])]]
        for args in commands:
            times = []
            for _ in ("cold", "warm"):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "charrnn", "sample", "--checkpoint", str(ckpt), "--seed", "1",
                                *args, "-o", str(Path(work) / "out.txt")], env=env, check=True)
                times.append(time.perf_counter() - start)
            lines.append(f"| charrnn sample {' '.join(args)} | {times[0]:.1f} s | {times[1]:.1f} s |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--checkpoint", help="a .pt checkpoint for the divergence check (default: a random model)")
    parser.add_argument("--first-length", type=int, default=200_000, help="characters of the one-stream first call")
    parser.add_argument("--first-many", type=int, nargs=2, default=[256, 4000], metavar=("N", "LENGTH"),
                        help="samples and length of the batched first call")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(V, "lstm", D, H, 2)).eval()
    config, prepared = model.config, PreparedModel(model.config, numpy_weights(model))
    backends = ["numpy"] + (["numba"] if choose_backend("auto") == "numba" else [])
    print(f"CPU: {cpu_name()} ({cpu_features()}), {os.cpu_count()} threads, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    best: dict = {}
    peak = 0.0
    for _ in range(args.rounds):
        peak = max(peak, matmul_gflops(torch.float32, torch.device("cpu")))
        for backend in backends:
            for streams in args.streams:
                wall, cpu = rate(prepared, config, backend, streams, args.seconds)
                old = best.get((backend, streams), (0.0, 0.0))
                best[(backend, streams)] = (max(old[0], wall), max(old[1], cpu))
    f = flops_per_char(config)
    print(f"fp32 matmul (torch, 2048 x 2048): {peak:.0f} GFLOP/s; model 2 x {H} LSTM: {f / 1e6:.2f} MFLOP/char\n")
    print("| backend | streams | chars/s | chars/CPU-s | GFLOP/s | % fp32 matmul | numba / numpy |")
    print("|---|---|---|---|---|---|---|")
    for (backend, streams), (wall, cpu) in best.items():
        ratio = wall / best[("numpy", streams)][0] if backend == "numba" else 1.0
        print(f"| {backend} | {streams} | {wall:,.0f} | {cpu:,.0f} | {wall * f / 1e9:.1f} | "
              f"{100 * wall * f / 1e9 / peak:.1f}% | {ratio:.1f}x |")
    top = "numba" if "numba" in backends else "numpy"
    if (top, 1) in best and (top, 256) in best:
        target = 100_000 if "AVX512-BF16" in cpu_features() else 50_000
        one, many = best[(top, 1)][0], best[(top, 256)][0]
        print(f"\ntargets ({top}): one stream {one:,.0f} chars/s of {target:,} | 256 streams "
              f"{100 * many * f / 1e9 / peak:.1f}% of the fp32 matmul rate, of 50%")
    if "numba" in backends:
        if args.checkpoint:
            from charrnn.checkpoint.io import read_pt
            payload = read_pt(args.checkpoint)
            config, prepared = payload.config, PreparedModel(payload.config, payload.model_state)
        print(f"\nnumba vs numpy text: {divergence(prepared, config)}")
    print("\n| first call (fresh numba cache, then warm) | cold | warm |\n|---|---|---|")
    print("\n".join(first_calls(model, args.first_length, tuple(args.first_many))))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
