"""Peak resident memory of preprocessing and training on corpora of 100 MB and 1 GB.

    python benchmarks/memory.py [--sizes 100 1000] [--workdir /tmp/charrnn-mem]

Each corpus repeats a real text (tiny-shakespeare when ../shared is present). Every job runs in
a fresh process that reports its own peak RSS, so the figures do not mix.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

JOB = """
import resource, sys, time
import charrnn
t0 = time.perf_counter()
if sys.argv[1] == "preprocess":
    charrnn.preprocess(sys.argv[2])
else:
    base = sys.argv[2][:-4]
    charrnn.train(input_h5=base + ".h5", input_json=base + ".json", gpu=-1, max_iters=100, checkpoint_every=0,
                  print_every=0, quiet=True, checkpoint_name=base + "-cv/checkpoint", overwrite=True,
                  val_max_batches=100)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t0)
"""


def measure(job: str, corpus: Path) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", JOB, job, str(corpus)], capture_output=True, text=True, check=True)
    rss, seconds = out.stdout.split()
    return float(rss), float(seconds)


def main() -> None:
    here = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="corpus sizes in MB")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    seed = here / "shared" / "data" / "tiny-shakespeare.txt"
    text = seed.read_bytes() if seed.exists() else b"The quick brown fox jumps over the lazy dog.\n" * 25000
    work = Path(args.workdir or tempfile.mkdtemp(prefix="charrnn-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    print("| corpus | preprocess peak RSS | preprocess time | training peak RSS (100 iterations, streamed) |")
    print("|---|---|---|---|")
    for mb in args.sizes:
        corpus = work / f"corpus{mb}.txt"
        with open(corpus, "wb") as f:
            for _ in range(mb * 1_000_000 // len(text) + 1):
                f.write(text)
        pre_rss, pre_s = measure("preprocess", corpus)
        train_rss, _ = measure("train", corpus)
        print(f"| {corpus.stat().st_size / 1e6:,.0f} MB | {pre_rss:,.0f} MB | {pre_s:.1f} s | {train_rss:,.0f} MB |",
              flush=True)
        for p in work.glob(f"corpus{mb}*"):
            if p.is_file():
                p.unlink()


if __name__ == "__main__":
    main()
