"""Throughput of data-parallel training: 1 process vs K processes (torchrun) on one machine.

    python benchmarks/distributed.py [--nproc 2] [--iters 40] [--rnn-size 128]

Both runs process the same number of characters per iteration (batch 50 in one process, 50/K
per rank), so chars/s compare directly. On a 2-core CPU expect little gain: the ranks share
the cores that one process's BLAS threads already use.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(nproc: int, args, data: Path, out: Path) -> float:
    per_rank = 50 // nproc
    train = ["train", "--input-h5", str(data / "c.h5"), "--input-json", str(data / "c.json"), "--gpu", args.gpu,
             "--batch-size", str(per_rank), "--rnn-size", str(args.rnn_size), "--max-iters", str(args.iters),
             "--checkpoint-every", "0", "--print-every", "0", "--speed-benchmark", "1", "--quiet",
             "--checkpoint-name", str(out / f"n{nproc}"), "--val-max-batches", "1"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] \
        if nproc > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    subprocess.run([*launcher, "-m", "charrnn", *train], check=True, env=env)
    times = json.loads((out / f"n{nproc}_{args.iters}.json").read_text())["forward_backward_times"][5:]
    return per_rank * nproc * 50 / (statistics.median(times) / 1000)


def main() -> None:
    here = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--rnn-size", type=int, default=128)
    parser.add_argument("--gpu", default="-1")
    parser.add_argument("--corpus", default=str(here / "shared" / "data" / "tiny-shakespeare.txt"))
    args = parser.parse_args()
    import charrnn
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        charrnn.preprocess(args.corpus, data / "c.h5", data / "c.json")
        one = run(1, args, data, data)
        many = run(args.nproc, args, data, data)
    print(f"| processes | chars/s (2 x {args.rnn_size}, 50 streams x 50) |\n|---|---|")
    print(f"| 1 | {one:,.0f} |\n| {args.nproc} | {many:,.0f} ({many / one:.2f}x) |")


if __name__ == "__main__":
    main()
