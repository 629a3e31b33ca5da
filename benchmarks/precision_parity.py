"""Does bf16 train as well as fp32? Same corpus, seed and iterations in both; compare validation loss.

    python benchmarks/precision_parity.py [--iters 400] [--rnn-size 128] [--corpora A.txt B.txt]

Each corpus (by default tiny-shakespeare and speeches.txt from ../shared/data) is split 90/10;
a model trains ``--iters`` iterations with ``--precision fp32`` and again with ``--precision bf16``
(fp32 master weights either way) and the final validation losses are compared. The target is a
relative difference within 1%. A benchmark, not a test: it takes minutes. Prints the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import charrnn
from charrnn.hardware import cpu_info

HERE = Path(__file__).resolve()
SHARED = next((p / "shared" / "data" for p in HERE.parents[1:4] if (p / "shared" / "data").is_dir()),
              HERE.parents[2] / "shared" / "data")  # ../shared next to the checkout (or a worktree's parent)


def train_once(h5: Path, js: Path, precision: str, args, checkpoint: Path) -> tuple[float, float]:
    """(validation loss, seconds) of one run."""
    t0 = time.monotonic()
    result = charrnn.train(input_h5=str(h5), input_json=str(js), gpu=-1, precision=precision, quiet=True,
                           num_layers=args.num_layers, rnn_size=args.rnn_size, max_iters=args.iters,
                           checkpoint_every=0, lr_schedule="cosine", warmup_iters=20, learning_rate=3e-3,
                           checkpoint_name=str(checkpoint), seed=args.seed)
    return result.val_loss, time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", nargs="+", default=[str(SHARED / "tiny-shakespeare.txt"),
                                                        str(SHARED / "speeches.txt")])
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--rnn-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--output", default="precision_parity.json")
    args = parser.parse_args()
    print(f"CPU: {cpu_info().describe()}; {args.num_layers}x{args.rnn_size} LSTM, {args.iters} iterations, "
          f"batch 50 x seq 50, cosine 3e-3", flush=True)
    print("| corpus | fp32 val loss | bf16 val loss | relative difference | fp32 s | bf16 s |")
    print("|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for corpus in map(Path, args.corpora):
            if not corpus.exists():
                print(f"| {corpus.name} | missing: skipped | | | | |")
                continue
            pre = charrnn.preprocess(corpus, Path(tmp) / f"{corpus.stem}.h5", Path(tmp) / f"{corpus.stem}.json",
                                     val_frac=0.1, test_frac=0.0)
            runs = {p: train_once(pre.output_h5, pre.output_json, p, args, Path(tmp) / f"{corpus.stem}-{p}")
                    for p in ("fp32", "bf16")}
            (fp32, fp32_s), (bf16, bf16_s) = runs["fp32"], runs["bf16"]
            diff = (bf16 - fp32) / fp32
            rows.append({"corpus": corpus.name, "fp32_val_loss": fp32, "bf16_val_loss": bf16, "relative_diff": diff,
                         "fp32_seconds": fp32_s, "bf16_seconds": bf16_s})
            print(f"| {corpus.name} | {fp32:.4f} | {bf16:.4f} | {100 * diff:+.2f}% | {fp32_s:.0f} | {bf16_s:.0f} |",
                  flush=True)
    worst = max((abs(r["relative_diff"]) for r in rows), default=0.0)
    print(f"largest difference {100 * worst:.2f}% ({'within' if worst <= 0.01 else 'OUTSIDE'} the 1% target)")
    Path(args.output).write_text(json.dumps({"cpu": cpu_info().describe(), "args": vars(args), "rows": rows},
                                            indent=1))


if __name__ == "__main__":
    main()
