"""Sampling speed of the exported HTML page in headless chromium, beside the Python engine's, on this machine.

    python benchmarks/export_page.py [--sizes 128 512] [--chars 100000] [--rounds 3] [--checkpoint cv/x.pt]

For each size, a 2 x H LSTM with 65 characters (random weights, or ``--checkpoint``) is exported
with ``charrnn export`` and opened from disk in Debian's chromium (Playwright, headless, network
off); ``window.charrnn.complete`` generates ``--chars`` characters at temperature 1 and the time
is taken inside the page (the worker's run, from request to the last piece). The same completion
runs on the Python engine (NumPy and numba backends, one stream). Each figure is the best of
``--rounds``. Printed: the CPU, the load average before and after, then chars/s per backend and
whether the page's text equals the engine's. The issue's target: 20,000 chars/s for 2 x 128.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charrnn.bench import cpu_name  # noqa: E402

V = 65


def random_checkpoint(directory: Path, H: int) -> Path:
    import torch

    from charrnn.checkpoint import save_checkpoint
    from charrnn.config import ModelConfig
    from charrnn.model import CharRNN
    from charrnn.vocab import Vocabulary

    torch.manual_seed(0)
    vocab = Vocabulary(tuple(range(32, 32 + V)))
    model = CharRNN(ModelConfig(V, "lstm", 64, H, 2)).eval()
    return save_checkpoint(directory / f"lstm{H}", 1, model, vocab, {})


def page_speed(browser, page_path: Path, chars: int, rounds: int) -> tuple[float, str]:
    page = browser.new_context(offline=True).new_page()
    page.goto(page_path.as_uri())
    page.evaluate("window.charrnn.ready")
    best, text = 0.0, ""
    for _ in range(rounds):
        out = page.evaluate("""async (n) => { const t0 = performance.now();
            const r = await window.charrnn.complete({max_tokens: n, temperature: 1, seed: 1});
            return {text: r.text, s: (performance.now() - t0) / 1000}; }""", chars)
        best, text = max(best, chars / out["s"]), out["text"]
    page.context.close()
    return best, text


def engine_speed(checkpoint: Path, backend: str, chars: int, rounds: int) -> tuple[float, str]:
    from charrnn.sampling.sampler import Sampler

    sampler = Sampler.from_checkpoint(checkpoint, backend=backend)
    sampler.complete(200, temperature=1.0, seed=1)  # compile / warm up
    best, text = 0.0, ""
    for _ in range(rounds):
        t0 = time.perf_counter()
        text = sampler.complete(chars, temperature=1.0, seed=1)
        best = max(best, chars / (time.perf_counter() - t0))
    return best, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--chars", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--checkpoint", help="Benchmark this checkpoint instead of random 2 x H LSTMs.")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from charrnn.export import export

    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
        print(f"chromium {browser.version}")
        sources = [Path(args.checkpoint)] if args.checkpoint else [random_checkpoint(Path(tmp), H) for H in args.sizes]
        for ckpt in sources:
            page_path = export(ckpt, Path(tmp) / f"{ckpt.stem}.html", overwrite=True)
            js, js_text = page_speed(browser, page_path, args.chars, args.rounds)
            row = [f"{ckpt.stem}: page {js:,.0f} chars/s ({page_path.stat().st_size / 1e6:.2f} MB)"]
            for backend in ("numpy", "numba"):
                try:
                    speed, text = engine_speed(ckpt, backend, args.chars, args.rounds)
                except Exception as exc:  # numba absent
                    row.append(f"{backend}: n/a ({exc})")
                    continue
                row.append(f"{backend} {speed:,.0f} chars/s (same text: {text == js_text})")
            print("; ".join(row))
        browser.close()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
