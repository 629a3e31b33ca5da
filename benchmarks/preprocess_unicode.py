"""Preprocessing speed and peak memory on ASCII, real-world UTF-8 and Cyrillic/Latin corpora.

    python benchmarks/preprocess_unicode.py [--mb 100] [--repeat 3] [--against ../other-checkout] [--data DIR]

Builds three corpora of about ``--mb`` MB in a temporary folder: pure ASCII (tiny-shakespeare
repeated), speeches.txt repeated (UTF-8 with a BOM, CRLF, curly quotes and dashes) and mixed
Cyrillic and Latin words (deterministic). Each job runs ``charrnn.preprocess`` in a fresh process
that reports its own peak RSS; jobs are repeated (the cores may be shared) and the best and
median MB/s are printed, by wall clock (timed like ``charrnn preprocess`` times itself) and by
CPU time. ``--against`` names another charrnn source tree to run side by side, interleaved.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# Timed like `charrnn preprocess` times itself ("done in ... MB/s"): from the call, h5py's import included.
JOB = """
import resource, sys, time
import charrnn.preprocessing
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
t0, c0 = time.perf_counter(), cpu()
charrnn.preprocessing.preprocess(sys.argv[1], sys.argv[2], sys.argv[3])
print(time.perf_counter() - t0, cpu() - c0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

LATIN = ("the of and to in is that it was for on are with as his they be at one have this from "
         "or had by word but what some we can out other were all there when up use your how said "
         "an each she which do their time if will way about many then them write would like so "
         "these her long make thing see him two has look more day could go come did number sound").split()
CYRILLIC = ("и в не на я быть он с что а по это она этот к но они мы как из у который то за свой "
            "весь год от так о для ты же все тот мочь вы человек такой его сказать только или ещё "
            "бы себя один как уже до время если сам когда другой вот говорить наш мой знать стать "
            "при чтобы дело жизнь кто первый очень два день её новый рука даже во со раз где там "
            "Москва Россия Пётр Анна съезд объём щёка юг эхо").split()


def cpu_name() -> str:
    """The CPU model and the vector features that matter here."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    features = [f for f, key in (("AVX2", "avx2"), ("AVX-512", "avx512bw"), ("AVX512-BF16", "avx512_bf16"),
                                 ("AMX", "amx_tile")) if key in flags]
    return f"{name}, {os.cpu_count()} cores" + (f" ({', '.join(features)})" if features else "")


def repeat_file(path: Path, seed: bytes, mb: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mb * 1_000_000 // len(seed) + 1):
            f.write(seed)


def mixed_scripts(path: Path, mb: int, seed: int = 0) -> None:
    """Sentences of Cyrillic and Latin words (half each) with punctuation, some capitalised words."""
    rng = np.random.default_rng(seed)
    words = np.array(LATIN + CYRILLIC, dtype=object)
    ends = np.array([". ", ", ", "; ", " — ", "! ", "?\n", ".\n", " "], dtype=object)
    latin = len(LATIN)
    size = 0
    with open(path, "wb") as f:
        while size < mb * 1_000_000:
            n = 200_000
            script = rng.random(n) < 0.5
            pick = np.where(script, rng.integers(0, latin, n), rng.integers(latin, len(words), n))
            parts = words[pick]
            gaps = ends[np.minimum(rng.geometric(0.35, n) - 1, len(ends) - 1)]
            gaps[rng.random(n) < 0.7] = " "
            block = "".join((parts + gaps).tolist()).encode("utf-8")
            f.write(block)
            size += len(block)


def build_corpora(work: Path, mb: int, data: Path) -> dict[str, Path]:
    shakespeare, speeches = data / "tiny-shakespeare.txt", data / "speeches.txt"
    ascii_seed = shakespeare.read_bytes() if shakespeare.exists() else b"The quick brown fox jumps over the lazy dog.\n"
    corpora = {"ASCII": work / "ascii.txt", "speeches (UTF-8)": work / "speeches.txt",
               "Cyrillic + Latin": work / "mixed.txt"}
    repeat_file(corpora["ASCII"], ascii_seed, mb)
    if speeches.exists():
        repeat_file(corpora["speeches (UTF-8)"], speeches.read_bytes(), mb)
    else:
        del corpora["speeches (UTF-8)"]
    mixed_scripts(corpora["Cyrillic + Latin"], mb)
    return corpora


def run_job(source: Path, corpus: Path) -> tuple[float, float, float]:
    """Seconds, CPU seconds and peak RSS (MB) of one preprocess run in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(source))
    out = subprocess.run([sys.executable, "-c", JOB, str(corpus), str(corpus.with_suffix(".h5")),
                          str(corpus.with_suffix(".json"))], capture_output=True, text=True, env=env, check=True,
                         cwd=corpus.parent)
    seconds, cpu, rss = out.stdout.split()[-3:]
    return float(seconds), float(cpu), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="corpus size in MB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per job")
    parser.add_argument("--against", type=Path, help="another charrnn source tree to compare with")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder with speeches.txt and tiny-shakespeare.txt [default: ../shared/data]")
    parser.add_argument("--workdir", type=Path, help="where to build the corpora [default: a temporary folder]")
    args = parser.parse_args()
    trees = {"this": REPO} | ({"against": args.against.resolve()} if args.against else {})
    with tempfile.TemporaryDirectory(prefix="charrnn-prep-", dir=args.workdir) as tmp:
        corpora = build_corpora(Path(tmp), args.mb, args.data)
        print(f"CPU: {cpu_name()}; {args.mb} MB corpora, {args.repeat} runs each, runs of the trees interleaved")
        print("MB/s: wall clock, best / median; per CPU s: the same bytes over user+sys CPU time "
              "(steadier on shared cores)")
        header = "| corpus | " + " | ".join(f"{t}: MB/s | {t}: per CPU s | {t}: peak RSS" for t in trees)
        print(header + (" | speed-up (best wall, best CPU) |" if len(trees) > 1 else " |"))
        print("|---" * (1 + 3 * len(trees) + (len(trees) > 1)) + "|")
        for name, corpus in corpora.items():
            size = corpus.stat().st_size / 1e6
            runs: dict[str, list] = {t: [] for t in trees}
            for _ in range(args.repeat):
                for tree, source in trees.items():
                    runs[tree].append(run_job(source, corpus))
            cells, best = [], []
            for tree in trees:
                rates, cpu_rates = [size / s for s, _, _ in runs[tree]], [size / c for _, c, _ in runs[tree]]
                best.append((max(rates), max(cpu_rates)))
                cells += [f"{max(rates):.0f} / {statistics.median(rates):.0f}",
                          f"{max(cpu_rates):.0f} / {statistics.median(cpu_rates):.0f}",
                          f"{max(r for _, _, r in runs[tree]):.0f} MB"]
            ratio = f" {best[0][0] / best[1][0]:.2f}x, {best[0][1] / best[1][1]:.2f}x |" if len(best) > 1 else ""
            print(f"| {name} ({size:.0f} MB) | " + " | ".join(cells) + " |" + ratio, flush=True)


if __name__ == "__main__":
    main()
