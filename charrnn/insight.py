"""``charrnn lr-find`` (the learning-rate range test) and ``charrnn novelty`` (memorisation check)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .data import load_splits, make_batches
from .device import select_device
from .errors import CharRNNError
from .fileio import atomic_write
from .model import CharRNN
from .plot import smooth
from .training import TrainConfig
from .vocab import Vocabulary


@dataclass
class LRFindResult:
    learning_rates: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    smoothed: list = field(default_factory=list)
    suggestion: float | None = None


def lr_find(config: TrainConfig, start_lr: float = 1e-6, end_lr: float = 1.0, num_iters: int = 100,
            stop_factor: float = 4.0) -> LRFindResult:
    """Train fresh weights while raising the learning rate exponentially; stop when the loss blows up.

    Suggests the learning rate where the smoothed loss falls fastest (per log of the rate).
    Writes no checkpoint.
    """
    if not 0 < start_lr < end_lr:
        raise CharRNNError(f"need 0 < --start-lr < --end-lr (got {start_lr}, {end_lr})")
    if num_iters < 5:
        raise CharRNNError("--num-iters must be at least 5")
    config.validate()
    device = select_device(config.gpu, config.gpu_backend)
    vocab = Vocabulary.load(config.input_json)
    batches = make_batches(load_splits(config.input_h5, vocab, ("train",))["train"], config.batch_size,
                           config.seq_length, "train")
    if batches is None:
        raise CharRNNError("the train split is too short for one sequence of --seq-length")
    torch.manual_seed(config.seed)
    model = CharRNN(config.model_config(len(vocab)))
    if config.weight_init != "torch-rnn":
        model.reset_parameters(config.weight_init, config.init_std)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=start_lr)
    gamma = (end_lr / start_lr) ** (1 / (num_iters - 1))
    result, best, state = LRFindResult(), math.inf, None
    for i in range(num_iters):
        lr = start_lr * gamma ** i
        for group in optimizer.param_groups:
            group["lr"] = lr
        k = i % batches.num_batches
        x = torch.from_numpy(batches.inputs[k]).to(device)
        y = torch.from_numpy(batches.targets[k]).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss, state = model.loss(x, y, state)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_value_(model.parameters(), config.grad_clip)
        optimizer.step()
        state = tuple(t.detach() for t in state)
        value = loss.item()
        result.learning_rates.append(lr)
        result.losses.append(value)
        smoothed = smooth(np.asarray(result.losses), 5)[-1]
        best = min(best, smoothed)
        if not math.isfinite(value) or smoothed > stop_factor * best:
            break
    result.smoothed = smooth(np.asarray(result.losses), 5).tolist()
    if len(result.smoothed) >= 5:
        logs = np.log10(result.learning_rates)
        slope = np.gradient(np.asarray(result.smoothed), logs)
        cut = int(np.argmin(result.smoothed)) + 1  # only before the minimum
        result.suggestion = float(result.learning_rates[int(np.argmin(slope[:cut]))])
    return result


def save_lr_find(result: LRFindResult, output: str | Path) -> list[Path]:
    """JSON beside a PNG (the PNG only when matplotlib is installed)."""
    output = Path(output)
    json_path = output.with_suffix(".json")
    with atomic_write(json_path) as f:
        json.dump({"learning_rates": result.learning_rates, "losses": result.losses,
                   "smoothed": result.smoothed, "suggestion": result.suggestion}, f)
    written = [json_path]
    try:
        import matplotlib
    except ImportError:
        return written
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_path
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    ax.plot(result.learning_rates, result.losses, alpha=0.3, label="loss")
    ax.plot(result.learning_rates, result.smoothed, label="smoothed")
    if result.suggestion:
        ax.axvline(result.suggestion, color="red", linestyle="--", label=f"suggested {result.suggestion:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="learning-rate range test")
    ax.legend()
    ax.grid(alpha=0.3)
    with atomic_path(output.with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return written + [output.with_suffix(".png")]


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
    from .sampling import Sampler

    ckpt = load_checkpoint(checkpoint)
    opt = ckpt.train_state.get("config") or ckpt.info.get("opt") or {}
    input_h5 = input_h5 or opt.get("input_h5")
    if not input_h5:
        raise CharRNNError("--input-h5 is required: the checkpoint does not record its data file")
    train_ids = load_splits(input_h5, ckpt.vocab, ("train",))["train"]
    sampler = Sampler(ckpt.build_model(), ckpt.vocab)
    text = sampler.complete(length, start_text, temperature=temperature, seed=seed)
    return novelty(ckpt.vocab.encode(text), train_ids, max_n)
