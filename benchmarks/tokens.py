"""Word tokens against character tokens: bits per character at the same training budget, and speed.

    python benchmarks/tokens.py compare [--budget 5m] [--max-vocab 2000] [--corpus PATH ...] [--train-arg=--rnn-size=256]
    python benchmarks/tokens.py preprocess [--mb 50] [--corpus PATH]

``compare`` preprocesses each corpus (default: ../shared/data/tiny-shakespeare.txt and speeches.txt)
twice, ``--tokens chars`` and ``--tokens words``, trains each for the same ``--budget`` with the
same flags (``charrnn train --time-budget``), evaluates the test split per character
(``charrnn eval``) and prints a Markdown table and a sample of each, side by side.

``preprocess`` times ``charrnn.preprocess`` with character and word tokens on a corpus repeated to
about ``--mb`` MB, each in a fresh process (best of three, start-up excluded by timing a 10x
smaller file too and taking the difference), and prints MB/s and the ratio (the target is at
least 0.5). The corpora default to ``../shared/data`` (or ``$CHARRNN_SHARED_DATA``). Both print the CPU and the load average: run them on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CHARRNN_SHARED_DATA", REPO.parent / "shared" / "data"))
TIMED = """
import sys, time
import charrnn.preprocessing
t0 = time.perf_counter()
charrnn.preprocessing.preprocess(sys.argv[1], sys.argv[2], sys.argv[3], tokens=sys.argv[4])
print(time.perf_counter() - t0)
"""


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"


def charrnn(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "charrnn", *args], check=True, env=env)


def run_one(corpus: Path, kind: str, args, work: Path) -> tuple[float, float, str]:
    """(test bits per character, characters per token, a sample) for one corpus and kind of token."""
    sys.path.insert(0, str(REPO))
    from charrnn.evaluation import evaluate_checkpoint
    from charrnn.sampling.sampler import Sampler

    stem = work / f"{corpus.stem}-{kind}"
    extra = ["--max-vocab", str(args.max_vocab)] if kind == "words" else []
    charrnn("preprocess", "--input-txt", str(corpus), "--output-h5", f"{stem}.h5", "--output-json", f"{stem}.json",
            "--tokens", kind, "--quiet", *extra)
    charrnn("train", "--input-h5", f"{stem}.h5", "--input-json", f"{stem}.json", "--time-budget", args.budget,
            "--checkpoint-name", str(stem / "cv"), "--quiet", *args.train_arg)
    checkpoint = sorted((stem).glob("cv_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))[-1]
    result = evaluate_checkpoint(checkpoint, split="test")
    text = Sampler.from_checkpoint(checkpoint).complete(args.sample_length, temperature=0.8, seed=1)
    return result.bits_per_char, result.chars_per_token, text


def compare(args) -> None:
    corpora = [Path(c) for c in args.corpus] or [SHARED / "tiny-shakespeare.txt", SHARED / "speeches.txt"]
    print(f"# word vs character tokens, {args.budget} each ({machine()})\n")
    print("| corpus | chars: test bits/char | words: test bits/char | words: chars/token |")
    print("|---|---|---|---|")
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for corpus in corpora:
            chars = run_one(corpus, "chars", args, Path(tmp))
            words = run_one(corpus, "words", args, Path(tmp))
            print(f"| {corpus.name} | {chars[0]:.3f} | {words[0]:.3f} | {words[1]:.2f} |", flush=True)
            samples.append((corpus.name, chars[2], words[2]))
    for name, chars, words in samples:
        print(f"\n## {name}\n\ncharacters:\n```\n{chars}\n```\nwords:\n```\n{words}\n```")


def preprocess_speed(args) -> None:
    source = Path(args.corpus) if args.corpus else SHARED / "tiny-shakespeare.txt"
    text = source.read_text(encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for label, mb in (("big", args.mb), ("small", args.mb / 10)):
            path = Path(tmp) / f"{label}.txt"
            chars = int(mb * 1e6 * len(text) / len(text.encode()))
            path.write_text((text * (chars // len(text) + 1))[:chars], encoding="utf-8")
            sizes[label] = path
        seconds = {}
        for kind in ("chars", "words"):
            for label, path in sizes.items():
                runs = [float(subprocess.run([sys.executable, "-c", TIMED, str(path), f"{path}.h5", f"{path}.json", kind],
                                             check=True, capture_output=True, text=True, env=env).stdout)
                        for _ in range(3)]
                seconds[kind, label] = min(runs)
        mb = (sizes["big"].stat().st_size - sizes["small"].stat().st_size) / 1e6
        print(f"preprocess {source.name} x {args.mb} MB ({machine()})")
        speed = {k: mb / max(seconds[k, "big"] - seconds[k, "small"], 1e-9) for k in ("chars", "words")}
        for kind, value in speed.items():
            print(f"  --tokens {kind:5s} {value:8.1f} MB/s")
        print(f"  words / chars = {speed['words'] / speed['chars']:.2f} (target: at least 0.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--budget", default="5m")
    c.add_argument("--max-vocab", type=int, default=2000)
    c.add_argument("--corpus", action="append", default=[])
    c.add_argument("--sample-length", type=int, default=400)
    c.add_argument("--train-arg", action="append", default=[], help="Extra train flag, e.g. --train-arg=--gpu=0")
    p = sub.add_parser("preprocess")
    p.add_argument("--mb", type=float, default=50)
    p.add_argument("--corpus")
    args = parser.parse_args()
    compare(args) if args.command == "compare" else preprocess_speed(args)


if __name__ == "__main__":
    main()
