"""The concerns of a training run, each a small subscriber to the loop's events.

Events (see :class:`charrnn.training.loop.Trainer`): ``on_start(run)``, ``on_step(step)``,
``on_evaluation(i, val_loss)``, ``on_sample(i, temperature, text)``, ``on_checkpoint(i, path)``,
``on_end(i, reason)`` and ``close()``. A subscriber never runs a collective: a stop it asks for
goes through ``run.control`` and the loop, which makes every rank agree.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..checkpoint import existing_checkpoints
from ..device import describe
from ..errors import CharRNNError, Unsupported, opt
from .progress import LOG2E, Progress


class HistoryRecorder:
    """torch-rnn's histories (saved in every checkpoint's JSON), plus lr, gradient norm and update ratios."""

    def __init__(self, run) -> None:
        self.history = run.history

    def on_step(self, step) -> None:
        h = self.history
        h.train_loss_history.append(step.loss)
        h.learning_rate_history.append(step.lr)
        if step.grad_norm is not None:
            h.stats_iterations.append(step.i)
            h.grad_norm_history.append(step.grad_norm)
            for name, ratio in step.update_ratios.items():
                h.update_ratio_history.setdefault(name, []).append(ratio)

    def on_evaluation(self, i: int, val_loss: float) -> None:
        self.history.val_loss_history.append(val_loss)
        self.history.val_loss_history_it.append(i)


class Benchmarks:
    """--speed-benchmark and --memory-benchmark: time (ms) and memory (bytes) of every iteration.

    On CUDA the memory is each iteration's own peak of allocated tensors (the peak is reset after
    every reading, and at the start: the calibration and earlier runs do not count); on MPS the
    memory the device has allocated; on the CPU the process's peak resident size.
    """

    def __init__(self, run) -> None:
        self.run = run

    def on_start(self, run) -> None:
        if run.config.memory_benchmark and run.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(run.device)

    def on_step(self, step) -> None:
        cfg, history, device = self.run.config, self.run.history, self.run.device
        if cfg.speed_benchmark:
            history.forward_backward_times.append(step.seconds * 1000)
        if cfg.memory_benchmark:
            history.memory_usage.append(memory_in_use(device))


def memory_in_use(device: torch.device) -> int:
    """Bytes for --memory-benchmark (see :class:`Benchmarks`); resets CUDA's peak for the next reading."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak
    if device.type == "mps":
        return torch.mps.current_allocated_memory()
    return resident_peak_bytes()


def resident_peak_bytes() -> int:
    """The process's peak resident size in bytes (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class DivergenceGuard:
    """Stops a run whose loss is no longer finite or exceeds --max-loss-factor x its first value."""

    def __init__(self, run) -> None:
        self.run = run

    def on_step(self, step) -> None:
        first, factor = self.run.history.train_loss_history[0], self.run.config.max_loss_factor
        if not math.isfinite(step.loss):
            raise self.run.diverged(step.i, f"the loss is {step.loss}")
        if factor and step.loss > factor * first:
            raise self.run.diverged(step.i, f"the loss {step.loss:.3f} exceeds {factor:g}x its starting value "
                                            f"{first:.3f} ({opt('max_loss_factor')} 0 disables this check)")

    def on_evaluation(self, i: int, val_loss: float) -> None:
        if not math.isfinite(val_loss):
            raise self.run.diverged(i, f"the validation loss is {val_loss}")


class CheckpointRetention:
    """--keep-last/--keep-best (delete older checkpoints of this run) and --patience (stop early)."""

    def __init__(self, run) -> None:
        self.run = run

    def best_iteration(self) -> int | None:
        h = self.run.history
        if not h.val_loss_history:
            return None
        return h.val_loss_history_it[min(range(len(h.val_loss_history)), key=h.val_loss_history.__getitem__)]

    def on_evaluation(self, i: int, val_loss: float) -> None:
        patience, h = self.run.config.patience, self.run.history.val_loss_history
        if patience and len(h) > patience and min(h[-patience:]) >= min(h[:-patience]) and i < self.run.total:
            self.run.say(f"no improvement in {patience} validations: stopping at {i} "
                         f"(best: iteration {self.best_iteration()})")
            self.run.control.stop("patience")

    def on_checkpoint(self, i: int, path: Path) -> None:
        cfg = self.run.config
        if not cfg.keep_last or not self.run.world.main:
            return
        keep_best = f"_{self.best_iteration()}.pt" if cfg.keep_best else None
        for old in existing_checkpoints(cfg.checkpoint_name)[:-cfg.keep_last]:
            if keep_best and old.name.endswith(keep_best) or old == path:
                continue
            for p in (old, old.with_suffix(".json")):
                p.unlink(missing_ok=True)


class DeadlinePlanner:
    """--time-budget: plans the run's end so that it, its final validation and checkpoint finish on time.

    The learning-rate schedule reads the planned end, so a cosine decay ends at the deadline.
    """

    def __init__(self, run) -> None:
        self.run = run

    def on_start(self, run) -> None:
        self.started = time.monotonic()
        # The budget counts from the command's start (start-up and a recipe's calibration included).
        spent = min(max(0.0, self.started - run.started), run.config.time_budget) if run.started else 0.0
        self.deadline = self.started + run.config.time_budget - spent
        # The final checkpoint: weights and Adam's two moments, written at a conservative 100 MB/s.
        self.save_s = 0.25 + 12 * sum(p.numel() for p in run.model.parameters()) / 100e6

    def on_step(self, step) -> None:
        run, i = self.run, step.i
        now, done = time.monotonic(), i - run.start
        per_iter = (now - self.started) / done
        val_batches = run.val_batches.num_batches if run.val_batches is not None else 0
        val_batches = min(val_batches, run.config.val_max_batches or val_batches)
        reserve = val_batches * per_iter / 3 + self.save_s  # a forward pass costs about a third of a step
        if now + per_iter + reserve >= self.deadline:
            if i < run.total:
                run.control.planned_end = i
                run.say(f"time budget of {run.config.time_budget:g} s reached at iteration {i}")
        elif done >= 5 and (done % 10 == 0 or done == 5):
            planned = i + int((self.deadline - now - reserve) / per_iter)
            run.control.planned_end = max(i + 1, min(run.max_total, planned))


class TrainingSamples:
    """--sample-every: a short sample from its own random stream, so training is not disturbed."""

    def __init__(self, run, events) -> None:
        self.run, self.events = run, events

    def on_step(self, step) -> None:
        from ..sampling.sampler import sample_from_model

        cfg = self.run.config
        if step.i % cfg.sample_every == 0:
            text = sample_from_model(self.run.model, self.run.vocab, cfg.sample_length, cfg.sample_temperature,
                                     seed=cfg.seed + step.i)
            shown = text if isinstance(text, str) else text.decode("utf-8", errors="replace")
            self.events.emit("sample", step.i, cfg.sample_temperature, shown)


class TensorBoardLogger:
    """--tensorboard DIR: losses, bits per character, learning rate, gradient statistics and samples."""

    def __init__(self, run) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise Unsupported(f"{opt('tensorboard')} needs the tensorboard package: "
                              "pip install 'charrnn[tensorboard]'") from None
        self.writer = SummaryWriter(run.config.tensorboard)

    def on_step(self, step) -> None:
        w, i = self.writer, step.i
        w.add_scalar("train/loss", step.loss, i)
        w.add_scalar("train/bpc", step.loss * LOG2E, i)
        w.add_scalar("train/learning_rate", step.lr, i)
        if step.grad_norm is not None:
            w.add_scalar("train/grad_norm", step.grad_norm, i)
            for name, ratio in step.update_ratios.items():
                if ratio is not None:
                    w.add_scalar(f"update_ratio/{name}", ratio, i)

    def on_evaluation(self, i: int, val_loss: float) -> None:
        self.writer.add_scalar("val/loss", val_loss, i)
        self.writer.add_scalar("val/bpc", val_loss * LOG2E, i)

    def on_sample(self, i: int, temperature: float, text: str) -> None:
        self.writer.add_text("sample", text, i)

    def close(self) -> None:
        self.writer.close()


def stats_path(checkpoint_name: str | Path) -> Path:
    """``cv/checkpoint`` -> ``cv/checkpoint.stats.jsonl``."""
    return Path(f"{checkpoint_name}.stats.jsonl")


class StatsFile:
    """``<checkpoint_name>.stats.jsonl``: one JSON object per line, flushed at once, for live dashboards.

    Line types: start (at every start or resume), train (every --stats-every iterations: the
    losses since the previous train line), val, sample, checkpoint, end. A resumed run appends;
    readers drop earlier points past the resumed start's iteration.
    """

    def __init__(self, run) -> None:
        self.run, self.path = run, stats_path(run.config.checkpoint_name)
        self.pending: list[float] = []
        self.file = None

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(_finite(record), allow_nan=False) + "\n")
        self.file.flush()

    def on_start(self, run) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a" if run.config.resume else "w", encoding="utf-8")
        except OSError as exc:
            raise CharRNNError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        dtype = run.autocast_dtype
        self.last_time = time.time()
        self.write({"type": "start", "time": self.last_time, "iteration": run.start, "config": asdict(run.config),
                    "model": run.model.config.to_dict(), "parameters": sum(p.numel() for p in run.model.parameters()),
                    "device": describe(run.device),
                    "precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")})

    def on_step(self, step) -> None:
        self.pending.append(step.loss)
        self.lr = step.lr
        every = self.run.config.stats_every
        if every and step.i % every == 0:
            self.flush(step.i, step.grad_norm, step.update_ratios)

    def flush(self, i: int, grad_norm: float | None = None, update_ratios: dict | None = None) -> None:
        now, cfg = time.time(), self.run.config
        chars = len(self.pending) * cfg.seq_length * self.run.train_batches.batch_size * self.run.world.size
        self.write({"type": "train", "i": i, "time": now, "losses": self.pending, "lr": self.lr,
                    "chars_per_s": chars / max(now - self.last_time, 1e-9), "grad_norm": grad_norm,
                    "update_ratio": update_ratios or {}})
        self.pending, self.last_time = [], now

    def on_evaluation(self, i: int, val_loss: float) -> None:
        self.write({"type": "val", "i": i, "time": time.time(), "val_loss": val_loss})

    def on_sample(self, i: int, temperature: float, text: str) -> None:
        self.write({"type": "sample", "i": i, "time": time.time(), "temperature": temperature, "text": text})

    def on_checkpoint(self, i: int, path: Path) -> None:
        self.write({"type": "checkpoint", "i": i, "time": time.time(), "path": str(path)})

    def on_end(self, i: int, reason: str) -> None:
        if self.pending:
            self.flush(i)
        self.write({"type": "end", "i": i, "time": time.time(), "reason": reason})

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _finite(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def default_subscribers(run, events, progress_bar: bool | None, quiet: bool) -> list:
    """The subscribers a run's config asks for, in the order they hear each event."""
    cfg, main = run.config, run.world.main
    progress = Progress(run.total, run.start, run.num_train, cfg.max_epochs, cfg.print_every,
                        bar=progress_bar, quiet=quiet).follow(run)
    run.say = progress.write
    subscribers = [HistoryRecorder(run), Benchmarks(run)]
    subscribers += [StatsFile(run)] if main else []
    subscribers += [progress, DivergenceGuard(run)]
    subscribers += [TensorBoardLogger(run)] if cfg.tensorboard and main else []
    subscribers += [TrainingSamples(run, events)] if cfg.sample_every and main else []
    subscribers += [DeadlinePlanner(run)] if cfg.time_budget else []
    return subscribers + [CheckpointRetention(run)]
