"""``charrnn lr-find``: the learning-rate range test, on the same model, optimizer and step as training."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import open_batches
from .device import select_device
from .errors import Conflict, InvalidInput
from .fileio import atomic_write
from .training.options import LRFindOptions, TrainConfig
from .plot import smooth
from .precision import grad_scaler, resolve_precision
from .training.step import build_model, build_optimizer, set_learning_rate, train_step
from .vocab import Vocabulary


@dataclass
class LRFindResult:
    learning_rates: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    smoothed: list = field(default_factory=list)
    suggestion: float | None = None


def lr_find(config: TrainConfig, start_lr: float = LRFindOptions.start_lr, end_lr: float = LRFindOptions.end_lr,
            num_iters: int = LRFindOptions.num_iters, stop_factor: float = 4.0) -> LRFindResult:
    """Train fresh weights while raising the learning rate exponentially; stop when the loss blows up.

    Suggests the learning rate where the smoothed loss falls fastest (per log of the rate).
    Uses ``config``'s model, batches, gradient clipping, optimizer and precision. Writes no checkpoint.
    """
    if not 0 < start_lr:
        raise InvalidInput("start_lr", f"must be positive (got {start_lr})")
    if not start_lr < end_lr:
        raise Conflict(("start_lr", "end_lr"), f"must rise: the start must lie below the end (got {start_lr} "
                                               f"and {end_lr})")
    if num_iters < 5:
        raise InvalidInput("num_iters", f"must be at least 5 (got {num_iters})")
    config.validate()
    device = select_device(config.gpu, config.gpu_backend)
    vocab = Vocabulary.load(config.input_json)
    batches = open_batches(config.input_h5, "train", vocab, config.batch_size, config.seq_length, config.stream_data)
    if batches is None:
        raise InvalidInput("seq_length", "is too long: the train split is too short for one sequence")
    torch.manual_seed(config.seed)
    model = build_model(config.model_config(len(vocab)), device, config.weight_init, config.init_std)
    optimizer = build_optimizer(model, start_lr, device)
    dtype = resolve_precision(config.precision, device)
    scaler = grad_scaler(device, dtype)  # fp16: the same loss scaling as training
    gamma = (end_lr / start_lr) ** (1 / (num_iters - 1))
    result, best, state = LRFindResult(), math.inf, None
    with batches:
        for i in range(num_iters):
            lr = start_lr * gamma ** i
            set_learning_rate(optimizer, lr)
            x, y = (torch.from_numpy(a).to(device) for a in batches.batch(i % batches.num_batches))
            step = train_step(model, optimizer, x, y, state, config.grad_clip, dtype, None, scaler)
            state = step.state
            result.learning_rates.append(lr)
            result.losses.append(step.loss)
            smoothed = smooth(np.asarray(result.losses), 5)[-1]
            best = min(best, smoothed)
            if not math.isfinite(step.loss) or smoothed > stop_factor * best:
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
                   "smoothed": result.smoothed, "suggestion": result.suggestion}, f, allow_nan=True)
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
