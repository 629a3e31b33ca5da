"""Learning-rate schedules, as pure functions of the iteration (so a resumed run agrees)."""

from __future__ import annotations

import math

from ..errors import InvalidInput

SCHEDULES = ("step", "cosine", "constant")


def learning_rate(i: int, base: float, total: int, num_train: int, schedule: str = "step",
                  decay_every: int = 5, decay_factor: float = 0.5, warmup_iters: int = 0,
                  min_lr: float = 0.0) -> float:
    """The learning rate of iteration ``i`` (counting from 1) of a run of ``total`` iterations.

    * ``step`` (torch-rnn's): multiply by ``decay_factor`` after every ``decay_every`` epochs.
    * ``cosine``: from ``base`` down to ``min_lr`` along half a cosine, ending at ``total``.
    * ``constant``: ``base`` throughout.

    A linear warm-up over the first ``warmup_iters`` iterations scales any of them.
    """
    if schedule == "step":
        lr = base * decay_factor ** ((i - 1) // num_train // decay_every)
    elif schedule == "cosine":
        span = max(1, total - warmup_iters)
        progress = min(1.0, max(0.0, (i - warmup_iters) / span))
        lr = min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * progress))
    elif schedule == "constant":
        lr = base
    else:
        raise InvalidInput("lr_schedule", f"must be one of {', '.join(SCHEDULES)} (got {schedule!r})")
    if warmup_iters and i <= warmup_iters:
        lr *= i / warmup_iters
    return max(lr, min_lr) if schedule != "step" else lr
