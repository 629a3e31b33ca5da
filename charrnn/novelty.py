"""``charrnn novelty``: a memorisation check (how much of a sample never occurs in the training split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoint import load_checkpoint
from .data import load_splits
from .errors import InvalidInput


def novelty(sample_ids: np.ndarray, train_ids: np.ndarray, max_n: int = 20) -> list[float]:
    """For n = 1..max_n, the fraction of the sample's n-grams that never occur in the training ids.

    Uses 64-bit polynomial rolling hashes of every n-gram (wrapping arithmetic), so it runs in
    vectorised NumPy over corpora of millions of characters.
    """
    base = np.uint64(1_000_003)
    sample_ids = np.asarray(sample_ids, dtype=np.uint64)
    train_ids = np.asarray(train_ids, dtype=np.uint64)
    hs, ht, out = sample_ids.copy(), train_ids.copy(), []
    with np.errstate(over="ignore"):
        for n in range(1, max_n + 1):
            if n > 1:
                if len(hs) < 2 or len(ht) < 2:
                    break
                hs = hs[:-1] * base + sample_ids[n - 1:]
                ht = ht[:-1] * base + train_ids[n - 1:]
            out.append(float(np.mean(~np.isin(hs, np.unique(ht)))))
    return out


def novelty_report(checkpoint: str | Path, input_h5: str | Path | None = None, length: int = 2000,
                   max_n: int = 20, temperature: float = 1.0, seed: int | None = 0, start_text: str = "") -> list[float]:
    """Sample from a checkpoint and measure its novelty against the training split."""
    from .sampling.sampler import Sampler

    ckpt = load_checkpoint(checkpoint)
    opt = ckpt.train_state.get("config") or ckpt.info.get("opt") or {}
    input_h5 = input_h5 or opt.get("input_h5")
    if not input_h5:
        raise InvalidInput("input_h5", "is required: the checkpoint does not record its data file")
    train_ids = load_splits(input_h5, ckpt.vocab, ("train",))["train"]
    sampler = Sampler(ckpt.build_model(), ckpt.vocab)
    text = sampler.complete(length, start_text, temperature=temperature, seed=seed)
    return novelty(ckpt.vocab.encode(text), train_ids, max_n)
