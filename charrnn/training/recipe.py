"""``--preset auto``: the recipe for this machine, this corpus and this time budget.

A short calibration times a few candidate shapes (layers x width, batch) at the run's precision;
:func:`choose` then maps (measured speed, corpus size, budget) to a recipe with a rule fitted to
the sweep in ``benchmarks/recipes.py`` (README, "Best model per CPU-minute"):

* **capacity**: the largest candidate that still gets :data:`MIN_UPDATES` optimizer updates in the
  time left (a wide model that takes too few steps loses to a smaller one that converges);
* **dropout**: between layers only, and only for runs that see the text at least
  :data:`DROPOUT_FROM_EPOCHS` times (in every shorter run measured it lost), by the corpus's
  characters per parameter (the fewer, the more the model can memorise);
* **learning rate**: :data:`PEAK_LR` of the width, scaled by sqrt(batch / 50); a linear
  warm-up over the first ~3% of updates, then a cosine decay to a tenth at the deadline.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

# -- the rule's constants (fitted in benchmarks/recipes.py; see the README's sweep table) ----------
MIN_UPDATES = 800  # fewer updates than this and the next smaller candidate wins
PEAK_LR = {128: 3e-3, 256: 4e-3, 384: 3e-3, 512: 3e-3, 768: 2e-3}  # at batch 50; larger batches scale it by sqrt
DROPOUT = ((20.0, 0.0), (3.0, 0.1), (1.0, 0.2), (0.0, 0.25))  # (corpus chars per parameter >=, dropout)
DROPOUT_FROM_EPOCHS = 10.0  # below this, dropout lost in every measured run (README)
WORDVEC_SIZE = 64
SEQ_LENGTH = 50
CALIBRATION_SHARE, CALIBRATION_MAX_S = 0.03, 8.0  # calibration gets 3% of the budget, at most 8 s
STARTUP_RESERVE_S = 1.0  # building the model, the first steps' warm-up
ONE_THREAD_GAIN = 1.5  # train on one thread when it measures this many times faster than all of them


@dataclass(frozen=True, order=True)
class Shape:
    """One candidate: recurrent layers, units per layer, streams per minibatch."""

    num_layers: int
    rnn_size: int
    batch_size: int

    def parameters(self, vocab_size: int, wordvec_size: int = WORDVEC_SIZE) -> int:
        """Parameters of an LSTM of this shape (embedding, layers with two bias vectors, output layer)."""
        H = self.rnn_size
        layers = sum(4 * H * ((wordvec_size if k == 0 else H) + H + 2) for k in range(self.num_layers))
        return vocab_size * wordvec_size + layers + H * vocab_size + vocab_size

    def __str__(self) -> str:
        return f"{self.num_layers}x{self.rnn_size}, batch {self.batch_size}"


# From the smallest to the largest; all use --seq-length 50.
CANDIDATES = (Shape(2, 128, 50), Shape(1, 256, 50), Shape(2, 256, 50), Shape(2, 384, 64), Shape(2, 512, 64),
              Shape(3, 512, 64), Shape(2, 768, 64))


@dataclass
class Recipe:
    """What ``--preset auto`` chose, and why: recorded in the checkpoint as JSON text, ``opt["recipe"]``."""

    num_layers: int
    rnn_size: int
    batch_size: int
    dropout: float
    learning_rate: float
    warmup_iters: int
    min_lr: float
    expected_updates: int
    epochs: float
    chars_per_parameter: float
    why: str
    iterations_per_s: dict  # measured speed of each calibrated candidate ("2x512, batch 64" -> it/s)
    calibration_s: float = 0.0
    applied: dict | None = None  # the options the run used (explicit flags win over the recipe)
    threads: int | None = None  # torch threads the run trained with

    def options(self) -> dict:
        """The training options this recipe sets (explicit flags are applied over them)."""
        return dict(num_layers=self.num_layers, rnn_size=self.rnn_size, wordvec_size=WORDVEC_SIZE,
                    batch_size=self.batch_size, seq_length=SEQ_LENGTH, dropout=self.dropout,
                    learning_rate=self.learning_rate, lr_schedule="cosine", warmup_iters=self.warmup_iters,
                    min_lr=self.min_lr, model_type="lstm")

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def pending(config) -> bool:
    """Whether a run must still choose its recipe (``--preset auto`` for a new model)."""
    if not config.recipe or config.resume or config.init_from:
        return False
    return (recorded(config.recipe) or {}).get("auto") is True


def recorded(text: str | None) -> dict | None:
    """The recipe stored as JSON text in a checkpoint's ``opt["recipe"]`` (None when absent or unreadable)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def dropout_for(chars_per_parameter: float, epochs: float, num_layers: int = 2) -> float:
    """Dropout for a model with this many training characters per parameter, trained for ``epochs``."""
    if epochs < DROPOUT_FROM_EPOCHS or num_layers < 2:
        return 0.0
    return next(p for at_least, p in DROPOUT if chars_per_parameter >= at_least)


def peak_lr(rnn_size: int, batch_size: int) -> float:
    width = min(PEAK_LR, key=lambda w: abs(w - rnn_size))
    return PEAK_LR[width] * math.sqrt(batch_size / 50)


def choose(speeds: dict[Shape, float], seconds: float, train_chars: int, vocab_size: int,
           seq_length: int = SEQ_LENGTH, max_updates: int | None = None) -> Recipe:
    """The recipe for ``seconds`` of training at the measured ``speeds`` (iterations/s) on
    ``train_chars`` characters of training text (and at most ``max_updates`` iterations)."""
    if not speeds:
        raise ValueError("no candidate was calibrated")
    updates = {shape: min(int(speed * seconds), max_updates or math.inf) for shape, speed in speeds.items()}
    fit = [s for s in speeds if updates[s] >= MIN_UPDATES]
    shape = max(fit, key=lambda s: (s.parameters(vocab_size), s.batch_size)) if fit else \
        max(speeds, key=lambda s: speeds[s] * s.batch_size)
    n = updates[shape]
    params = shape.parameters(vocab_size)
    seen = n * shape.batch_size * seq_length
    per_param, epochs = train_chars / params, seen / train_chars
    dropout = dropout_for(per_param, epochs, shape.num_layers)
    lr = peak_lr(shape.rnn_size, shape.batch_size)
    why = (f"{shape} is the largest candidate with at least {MIN_UPDATES} updates in {seconds:.0f} s "
           if fit else f"no candidate reaches {MIN_UPDATES} updates in {seconds:.0f} s: {shape} sees the most "
                       "characters ")
    why += (f"(~{n} at {speeds[shape]:.2g} it/s); {epochs:.1f} epochs of {train_chars / 1e6:.2g}M characters, "
            f"{per_param:.2g} per parameter: dropout {dropout:g}")
    return Recipe(shape.num_layers, shape.rnn_size, shape.batch_size, dropout, lr,
                  warmup_iters=max(10, min(200, n // 30)), min_lr=lr / 10, expected_updates=n,
                  epochs=round(epochs, 2), chars_per_parameter=round(per_param, 3), why=why,
                  iterations_per_s={str(s): round(v, 3) for s, v in sorted(speeds.items())})


def calibration_seconds(budget: float) -> float:
    return min(CALIBRATION_MAX_S, CALIBRATION_SHARE * budget)


def calibrate(vocab_size: int, device, autocast_dtype, seconds: float, candidates: tuple[Shape, ...] = CANDIDATES,
              seq_length: int = SEQ_LENGTH) -> tuple[dict[Shape, float], int]:
    """Iterations per second of each candidate, on random tokens, in about ``seconds`` in all,
    and the number of torch threads to train with.

    Candidates are timed from the smallest up; one whose first steps alone overrun its share
    ends the calibration (the larger ones would be slower still). On a CPU shared with other
    work, several threads can be many times slower than one (each waits for the others at every
    operation): the smallest candidate is also timed on one thread, which is kept if it is
    :data:`ONE_THREAD_GAIN` times faster. Torch's random state and thread count are kept.
    """
    import torch

    speeds: dict[Shape, float] = {}
    threads = before = torch.get_num_threads()
    start = time.monotonic()
    on_cpu = device.type == "cpu"
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            if not on_cpu:  # a GPU's first step loads its libraries and builds handles: seconds, untimed
                _steps_per_second(candidates[0], vocab_size, seq_length, device, autocast_dtype, 0.0)
                start = time.monotonic()
            for k, shape in enumerate(candidates):
                thread_try = k == 0 and before > 1 and on_cpu  # only a CPU has threads to try
                share = (start + seconds - time.monotonic()) / (len(candidates) - k + thread_try)
                speeds[shape], took = _steps_per_second(shape, vocab_size, seq_length, device, autocast_dtype, share)
                if thread_try:
                    torch.set_num_threads(1)
                    alone, took = _steps_per_second(shape, vocab_size, seq_length, device, autocast_dtype, share)
                    if alone > ONE_THREAD_GAIN * speeds[shape]:
                        speeds[shape], threads = alone, 1
                    else:
                        torch.set_num_threads(before)
                if took > 2 * share:  # the next, larger candidate would not fit either
                    break
        finally:
            torch.set_num_threads(before)
    return speeds, threads


def _steps_per_second(shape: Shape, vocab_size: int, seq_length: int, device, autocast_dtype,
                      seconds: float) -> tuple[float, float]:
    """(training steps per second of ``shape`` measured for about ``seconds``, seconds taken)."""
    import torch

    from ..config import ModelConfig
    from .step import build_model, build_optimizer, train_step

    config = ModelConfig(vocab_size, "lstm", WORDVEC_SIZE, shape.rnn_size, shape.num_layers, 0.0, False)
    model = build_model(config, device)
    optimizer = build_optimizer(model, 1e-3, device)
    x, y = (torch.randint(vocab_size, (shape.batch_size, seq_length), device=device) for _ in range(2))
    t0 = time.monotonic()
    train_step(model, optimizer, x, y, None, 5.0, autocast_dtype)  # warm-up (allocations, kernels)
    _sync(device)
    t1, steps = time.monotonic(), 0
    if t1 - t0 >= seconds:  # no time for more: the warm-up step is a (pessimistic) measure
        return 1 / (t1 - t0), t1 - t0
    while steps < 1 or time.monotonic() - t0 < seconds:
        train_step(model, optimizer, x, y, None, 5.0, autocast_dtype)
        steps += 1
    _sync(device)
    now = time.monotonic()
    return steps / (now - t1), now - t0


def _sync(device) -> None:
    if device.type == "cuda":
        import torch
        torch.cuda.synchronize(device)


def apply(config, vocab_size: int, train_chars: int, device, started: float, world=None,
          log: Callable[[str], None] = print):
    """``config`` with the auto recipe's options under the explicitly given ones, and the recipe
    recorded in ``config.recipe``. ``started``: when the command began (time.monotonic()), so
    that the calibration and the start-up count against the budget."""
    import torch

    from . import distributed
    from ..precision import resolve_precision

    explicit = set(recorded(config.recipe).get("explicit", ()))
    seq_length = config.seq_length if "seq_length" in explicit else SEQ_LENGTH
    precision = config.precision if "precision" in explicit else "auto"
    candidates = CANDIDATES
    if "batch_size" in explicit:  # time the candidates at the batch size that will be used
        candidates = tuple(sorted({replace(s, batch_size=config.batch_size) for s in CANDIDATES}))
    t0 = time.monotonic()
    speeds, threads = calibrate(vocab_size, device, resolve_precision(precision, device),
                                calibration_seconds(config.time_budget), candidates, seq_length)
    if world is not None and world.distributed:  # every rank must pick the same recipe: average the speeds
        mean = distributed.sum_all([speeds.get(s, 0.0) for s in candidates], world, device)
        speeds = {s: v / world.size for s, v in zip(candidates, mean) if v > 0}
    calibration = time.monotonic() - t0
    seconds = config.time_budget - (time.monotonic() - started) - STARTUP_RESERVE_S
    recipe = choose(speeds, max(seconds, 1.0), train_chars, vocab_size, seq_length,
                    config.max_iters if "max_iters" in explicit else None)
    recipe.calibration_s, recipe.threads = round(calibration, 2), threads
    if threads != torch.get_num_threads():  # restored when the run ends (Trainer.run)
        log(f"training on {threads} torch thread: it measured faster than {torch.get_num_threads()} "
            "(the CPU is busy with other work)")
        torch.set_num_threads(threads)
    chosen = {k: v for k, v in {**recipe.options(), "precision": precision}.items() if k not in explicit}
    config = replace(config, **chosen)
    recipe.applied = {k: getattr(config, k) for k in recipe.options()}
    log(f"recipe (--preset auto): {describe(config)}; calibrated {len(speeds)} candidates in {calibration:.1f} s")
    log(f"  because {recipe.why}" + (f"; explicit flags kept: {', '.join(sorted(explicit & set(recipe.options())))}"
                                    if explicit & set(recipe.options()) else ""))
    return replace(config, recipe=recipe.to_json())


def describe(config) -> str:
    """One line: the recipe a configuration trains with."""
    return (f"{config.num_layers}x{config.rnn_size} {config.model_type}, "
            f"batch {config.batch_size}x{config.seq_length}, "
            f"dropout {config.dropout:g}, {config.lr_schedule} {config.learning_rate:.2g} -> {config.min_lr:.2g}, "
            f"warm-up {config.warmup_iters}, precision {config.precision}")
