"""charrnn serve under load: 1, 8 and 64 concurrent streaming clients on loopback, against the batch rate.

    python benchmarks/serve.py [--checkpoint PATH] [--seconds 10] [--clients 1 8 64] [--dashboard-iters 200]

For each client count K: K clients stream completions (re-requesting when one ends) for a fixed
time; we report the aggregate characters/s, the time to the first character of those requests,
and the ratio to the ``--num-samples K`` batch rate (the same engine stepping K rows in one batch
with ``Engine.generate``, no HTTP). With K = 64, probes measure a new request's first character while 63 others stream.
Without --checkpoint an untrained 2x128 LSTM (the default architecture) is used: speed does not
depend on the weights. Clients and server share this machine's cores; the CPU is named.
With --dashboard-iters, also training's chars/s alone and with a dashboard polling its stats
file (alternating runs, so that the machine's noise falls on both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = re.search(r"model name\s*:\s*(.+)", info).group(1).strip()
        flags = re.search(r"flags\s*:\s*(.+)", info).group(1).split()
        simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        return f"{name}, {os.cpu_count()} cores, {simd}"
    except (OSError, AttributeError):
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def make_checkpoint(workdir: Path) -> Path:
    """An untrained 2x128 LSTM over a small English-like vocabulary (one training iteration)."""
    import charrnn

    text = ("We will make this country great again, and the people know it. Believe me: tremendous. " * 400)
    corpus = workdir / "corpus.txt"
    corpus.write_text(text)
    charrnn.preprocess(corpus)
    return charrnn.train(input_h5=str(workdir / "corpus.h5"), input_json=str(workdir / "corpus.json"), gpu=-1,
                         max_iters=1, print_every=0, checkpoint_every=0, batch_size=2, seq_length=16,
                         checkpoint_name=str(workdir / "cv" / "checkpoint"), quiet=True).checkpoint


def batch_rate(checkpoint: Path, streams: int, seconds: float) -> float:
    """Characters/s of ``--num-samples streams`` (the engine's batch path, no HTTP): the best of repeated runs."""
    import numpy as np

    from charrnn.sampling.engine import Engine, SamplingParams
    from charrnn.serve.models import load_model

    model = load_model(Path(checkpoint))
    engine = Engine(model.config, model.weights, capacity=streams)
    best, deadline, length = 0.0, time.perf_counter() + seconds, 2000
    for run in range(1000):
        slots = np.array([engine.open(SamplingParams(seed=run * streams + j)) for j in range(streams)])
        t0 = time.perf_counter()
        engine.feed(slots, engine.first(slots))
        engine.generate(slots, length if run else 50)  # the first run is a warm-up (compiled kernels)
        if run:
            best = max(best, streams * length / (time.perf_counter() - t0))
        for s in slots:
            engine.close(int(s))
        if run and time.perf_counter() > deadline:
            break
    return best


class Server:
    def __init__(self, checkpoint: Path, extra: list[str] = ()) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", "--checkpoint", str(checkpoint),
                                      "--port", "0", "--max-batch", "64", *extra], stdout=subprocess.PIPE, text=True,
                                     env=env)
        for line in self.proc.stdout:
            m = re.match(r"charrnn serve: (http://\S+?)/?$", line.strip())
            if m:
                self.url = m.group(1)
                return
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.send_signal(2)
        self.proc.wait(30)


async def stream_once(host: str, port: int, max_tokens: int, until: float, chars: list) -> float | None:
    """One streamed completion over a raw connection (a lean client, so the server is what we measure).

    Counts characters into ``chars[0]`` until the stream ends or ``until``; returns the time to
    the first character.
    """
    reader, writer = await asyncio.open_connection(host, port)
    body = json.dumps({"max_tokens": max_tokens, "stream": True, "prompt": "We "}).encode()
    t0 = time.perf_counter()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    first = None
    try:
        while (await reader.readline()) not in (b"\r\n", b""):  # status line and headers
            pass
        while time.perf_counter() < until or first is None:
            size = int((await reader.readline()).strip() or b"0", 16)  # chunked transfer encoding
            if size == 0:
                break
            data = (await reader.readexactly(size + 2))[:-2]
            for event in data.split(b"\n\n"):
                if event.startswith(b"data: {"):
                    n = sum(len(c["text"]) for c in json.loads(event[6:])["choices"])
                    if n and first is None:
                        first = time.perf_counter() - t0
                    chars[0] += n
    finally:
        writer.close()
    return first


async def client(host: str, port: int, until: float, chars: list, firsts: list) -> None:
    """Stream completions back to back until ``until``."""
    while time.perf_counter() < until:
        first = await stream_once(host, port, 4000, until, chars)
        if first is not None:
            firsts.append(first)


async def load(url: str, clients: int, seconds: float, probes: int) -> dict:
    host, port = url.split("//")[1].rsplit(":", 1)
    port = int(port)
    # warm-up: every client gets going before the clock starts
    await asyncio.gather(*[client(host, port, time.perf_counter() + 1.0, [0], []) for _ in range(clients)])
    chars, firsts, probe_times = [0], [], []
    start = time.perf_counter()
    until = start + seconds
    tasks = [asyncio.ensure_future(client(host, port, until, chars, firsts)) for _ in range(clients)]
    if probes:  # a new request's first character while the others stream
        await asyncio.sleep(seconds / 4)
        for _ in range(probes):
            probe_times.append(await stream_once(host, port, 1, 0, [0]))
            await asyncio.sleep(seconds / (2 * probes))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    probe_times = sorted(t for t in probe_times if t is not None)
    return {"chars_per_s": chars[0] / elapsed, "first_char_ms": 1000 * statistics.median(firsts) if firsts else None,
            "probe_ms": 1000 * statistics.median(probe_times) if probe_times else None,
            "probe_p90_ms": 1000 * probe_times[int(0.9 * (len(probe_times) - 1))] if probe_times else None}


def training_rate(workdir: Path, name: str, iters: int, watch_url: str | None) -> float:
    """Median chars/s that ``charrnn train`` reports in its stats file, with or without a dashboard polling it."""
    import threading
    import urllib.request

    run = workdir / "runs" / name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", "--input-h5", str(workdir / "corpus.h5"),
                             "--input-json", str(workdir / "corpus.json"), "--gpu", "-1", "--max-iters", str(iters),
                             "--rnn-size", "64", "--batch-size", "16", "--seq-length", "32", "--stats-every", "1",
                             "--print-every", "0", "--checkpoint-every", "0", "--checkpoint-name", str(run),
                             "--quiet"], env=env)
    stop = threading.Event()

    def watch() -> None:  # 8x as often as the page polls, re-reading from the start now and then
        offset, polls = 0, 0
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"{watch_url}/api/run?name=runs/{name}&offset={offset}", timeout=5) as r:
                    offset = 0 if polls % 20 == 0 else json.load(r)["offset"]
            except OSError:
                pass
            polls += 1
            stop.wait(0.25)

    watcher = threading.Thread(target=watch, daemon=True) if watch_url else None
    if watcher:
        watcher.start()
    proc.wait()
    stop.set()
    rates = [r["chars_per_s"] for r in map(json.loads, (run.parent / (run.name + ".stats.jsonl")).read_text().splitlines())
             if r.get("type") == "train" and r.get("chars_per_s")]
    return statistics.median(rates[len(rates) // 5:])  # skip the warm-up


def dashboard_overhead(checkpoint: Path, workdir: Path, iters: int, rounds: int) -> tuple[float, float]:
    """Training chars/s alone and with a dashboard watching, alternating runs to spread the machine's noise."""
    server = Server(checkpoint, ["--runs", str(workdir / "runs")])
    try:
        alone, watched = [], []
        for k in range(rounds):
            alone.append(training_rate(workdir, f"alone{k}", iters, None))
            watched.append(training_rate(workdir, f"watched{k}", iters, server.url))
    finally:
        server.stop()
    return statistics.mean(alone), statistics.mean(watched)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--probes", type=int, default=10)
    ap.add_argument("--dashboard-iters", type=int, default=0,
                    help="Also measure training chars/s with and without a dashboard watching (iterations per run).")
    ap.add_argument("--dashboard-rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generated = make_checkpoint(Path(tmp))
        checkpoint = args.checkpoint or generated
        if args.dashboard_iters:
            alone, watched = dashboard_overhead(checkpoint, Path(tmp), args.dashboard_iters, args.dashboard_rounds)
            print(f"training alone: {alone:,.0f} chars/s; with a dashboard polling every 0.25 s: {watched:,.0f} "
                  f"chars/s ({watched / alone:.2f}x)")
        server = Server(checkpoint)
        try:
            rows = []
            for k in args.clients:
                probes = args.probes if k > 1 else 0
                served = asyncio.run(load(server.url, k - (1 if probes else 0), args.seconds, probes))
                batch = batch_rate(checkpoint, k, min(args.seconds, 5))
                rows.append((k, served, batch))
                print(f"{k} clients: {served['chars_per_s']:,.0f} chars/s served, {batch:,.0f} batch", file=sys.stderr)
        finally:
            server.stop()
    print(f"\nCPU: {cpu_name()}; model: {checkpoint if args.checkpoint else 'untrained LSTM 2x128'}; "
          f"{args.seconds:g} s per client count\n")
    print("| streams | served chars/s | `--num-samples` chars/s | ratio | first char (median) | first char while others stream (median / p90) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k, s, b in rows:
        probe = f"{s['probe_ms']:.0f} / {s['probe_p90_ms']:.0f} ms" if s["probe_ms"] is not None else "–"
        first = f"{s['first_char_ms']:.0f} ms" if s["first_char_ms"] is not None else "–"
        print(f"| {k} | {s['chars_per_s']:,.0f} | {b:,.0f} | {s['chars_per_s'] / b:.2f}x | {first} | {probe} |")


if __name__ == "__main__":
    main()
