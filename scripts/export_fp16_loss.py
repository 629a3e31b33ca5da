"""Validation loss of an exported page's weights, fp32 against ``--weights fp16``, with the page's arithmetic.

    python scripts/export_fp16_loss.py --checkpoint cv/checkpoint_10000.pt --input-h5 data/speeches.h5 [--max-chars 200000]

The page computes with the engine's prepared arrays (embedding folded into the first layer, batch
norm folded); ``--weights fp16`` stores those arrays as float16 and computes in float32. This runs
the engine (NumPy) over the split as one continuous stream, once with the arrays as stored in an
fp32 page and once rounded as in an fp16 page, and prints both mean losses (nats/char) and their
relative difference. The issue's target: within 0.5 %.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charrnn.export import load_export_model  # noqa: E402
from charrnn.export.html import text_loss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--input-h5", required=True)
    ap.add_argument("--split", default="val", choices=["val", "test", "train"])
    ap.add_argument("--max-chars", type=int, default=200_000, help="Use at most this many characters of the split.")
    args = ap.parse_args()
    model = load_export_model(args.checkpoint)
    with h5py.File(args.input_h5, "r") as f:
        tokens = np.asarray(f[args.split][:args.max_chars], dtype=np.int64) - 1
    fp32 = text_loss(model.prepared, tokens)
    fp16 = text_loss(model.prepared, tokens, fp16=True)
    print(f"{model.path} on {len(tokens):,} characters of the {args.split} split: fp32 {fp32:.6f}, "
          f"fp16 {fp16:.6f} nats/char, difference {100 * (fp16 - fp32) / fp32:+.4f} %")


if __name__ == "__main__":
    main()
