"""Training, as torch-rnn's train.lua does it, with exact resume and crash-safe checkpoints.

:func:`setup` returns a ready :class:`Run` (data, model, optimizer, resume state); the
:class:`Trainer`'s loop then reads top to bottom: learning rate, step, agree across ranks,
record, maybe evaluate and checkpoint, stop? Everything else (history, progress, TensorBoard,
samples, retention and patience, the time budget, the divergence guard, benchmarks, the stats
file) listens to the loop's events: see :mod:`charrnn.training.subscribers`.
"""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from . import distributed, recipe
from ..checkpoint import (Checkpoint, CheckpointName, checkpoint_stem, existing_checkpoints, load_checkpoint,
                          remove_stale_temporaries, save_checkpoint)
from ..checkpoint.names import best_of_run
from ..data import BatchSource, InMemoryBatches, open_batches, split_sizes
from ..device import describe, select_device
from ..errors import CharRNNError, CorruptFile, Diverged, InvalidInput, Unsupported, opt
from ..model import CharRNN, parameter_groups
from .options import TrainConfig, resolve_train_config
from ..precision import describe_precision, grad_scaler, resolve_precision
from .schedules import learning_rate
from .step import build_model, build_optimizer, evaluate, set_learning_rate, train_step
from ..vocab import Vocabulary

@dataclass
class History:
    """torch-rnn's JSON histories, plus the learning rate of every iteration."""

    train_loss_history: list = field(default_factory=list)
    val_loss_history: list = field(default_factory=list)
    val_loss_history_it: list = field(default_factory=list)
    forward_backward_times: list = field(default_factory=list)
    memory_usage: list = field(default_factory=list)
    learning_rate_history: list = field(default_factory=list)
    stats_iterations: list = field(default_factory=list)
    grad_norm_history: list = field(default_factory=list)
    update_ratio_history: dict = field(default_factory=dict)  # layer -> log10(mean|update| / mean|param|)


@dataclass
class TrainResult:
    checkpoint: Path | None
    iterations: int
    history: History
    interrupted_by: int | None = None  # signal number when stopped by SIGINT/SIGTERM

    @property
    def val_loss(self) -> float | None:
        return self.history.val_loss_history[-1] if self.history.val_loss_history else None

    @property
    def best_checkpoint(self) -> Path | None:
        """The run's checkpoint with the lowest validation loss still on disk (what ``sample DIR`` picks)."""
        h = self.history
        return None if self.checkpoint is None else best_of_run(self.checkpoint, zip(h.val_loss_history_it, h.val_loss_history))

    @property
    def best_val_loss(self) -> float | None:
        best, h = self.best_checkpoint, self.history
        name = best and CheckpointName.parse(best)
        losses = [v for it, v in zip(h.val_loss_history_it, h.val_loss_history) if name and it == name.iteration]
        return losses[-1] if losses else None


# -- the ready run ---------------------------------------------------------------------------------
@dataclass
class Control:
    """What subscribers may ask of the loop; the loop alone acts on it, after the ranks agree."""

    planned_end: int | None = None  # the time budget's plan (rank 0's counts)
    stop_reason: str | None = None  # a stop every rank reaches alike (patience)

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason


@dataclass
class Run:
    """Everything the loop needs, ready to go: what :func:`setup` returns."""

    config: TrainConfig
    world: distributed.World
    device: torch.device
    vocab: Vocabulary
    train_batches: BatchSource  # this rank's streams
    val_batches: BatchSource | None
    val_shared: bool  # the val streams are split across ranks (their losses are averaged)
    model: CharRNN
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None = None  # fp16's loss scaler
    history: History = field(default_factory=History)
    start: int = 0  # the iteration before the first one this run takes
    total: int = 0  # the planned last iteration (a time budget re-plans it)
    max_total: int = 0  # the last iteration --max-iters/--max-epochs allow
    lr: float = 0.0
    state: tuple | None = None  # the hidden state carried between minibatches
    last_checkpoint: Path | None = None
    control: Control = field(default_factory=Control)
    say: Callable[[str], None] = print  # messages during the run (through the progress bar)
    started: float = 0.0  # time.monotonic() when the command began: a time budget counts from here
    _on_device: tuple | None = None  # a small train split, whole, on the device

    @property
    def num_train(self) -> int:
        return self.train_batches.num_batches

    @property
    def groups(self) -> dict:
        return parameter_groups(self.model)

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of iteration ``i`` on the device."""
        k = (i - 1) % self.num_train
        if self._on_device is not None:
            return self._on_device[0][k], self._on_device[1][k]
        return tuple(torch.from_numpy(a).to(self.device) for a in self.train_batches.batch(k))

    def set_learning_rate(self, i: int) -> None:
        cfg = self.config
        lr = learning_rate(i, cfg.learning_rate, self.total, self.num_train, cfg.lr_schedule, cfg.lr_decay_every,
                           cfg.lr_decay_factor, cfg.warmup_iters, cfg.min_lr)
        if lr != self.lr:
            if cfg.reset_adam_on_decay and lr < self.lr and cfg.lr_schedule == "step":
                self.optimizer.state.clear()  # torch-rnn's quirk, on request
            self.lr = lr
            set_learning_rate(self.optimizer, lr)

    def diverged(self, i: int, why: str) -> Diverged:
        last = self.last_checkpoint
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written before it"
        return Diverged(i, f"training diverged at iteration {i}: {why}; {where}. Try a lower {opt('learning_rate')}")


def setup(config: TrainConfig, log: Callable[[str], None] = print, started: float | None = None) -> Run:
    """Check the checkpoint name, join the process group, load data, build or restore model and optimizer.

    ``started``: when the command began (``time.monotonic()``); a time budget counts from there.
    """
    started = time.monotonic() if started is None else started
    config.validate()
    _check_checkpoint_name(config)
    world = distributed.world_from_env()
    device = _device(config, world, log if world.main else (lambda message: None))
    vocab = Vocabulary.load(config.input_json)
    if recipe.pending(config):  # --preset auto: calibrate and choose
        train_chars = split_sizes(config.input_h5, ("train",))["train"]
        config = recipe.apply(config, len(vocab), train_chars, device, started, world,
                              log if world.main else (lambda message: None))
    train, val, val_shared = _load_data(config, vocab, world, log)
    source = _source_checkpoint(config, vocab)
    torch.manual_seed(config.seed)
    if source:
        model = source.build_model(device).train()
    else:
        model = build_model(config.model_config(len(vocab)), device, config.weight_init, config.init_std)
    net = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    dtype = resolve_precision(config.precision, device)
    run = Run(config, world, device, vocab, train, val, val_shared, model, net,
              build_optimizer(model, config.learning_rate, device), dtype, grad_scaler(device, dtype),
              lr=config.learning_rate, started=started)
    if config.resume:
        _restore(run, source)
    elif source and not config.reset_iterations:
        run.start = source.iteration
    set_learning_rate(run.optimizer, run.lr)
    run.total = run.max_total = config.max_iters or config.max_epochs * run.num_train
    if run.start >= run.total:
        field = "max_iters" if config.max_iters else "max_epochs"
        raise InvalidInput(field, f"{getattr(config, field)} ends the run at iteration {run.total}, but the "
                                  f"checkpoint is at iteration {run.start}: nothing to do (raise it)")
    if isinstance(train, InMemoryBatches):  # a small split lives on the device whole
        run._on_device = (torch.from_numpy(train.inputs).to(device), torch.from_numpy(train.targets).to(device))
    return run


def _check_checkpoint_name(cfg: TrainConfig) -> None:
    """Refuse to overwrite another run's checkpoints (a resumed run may write over its own)."""
    remove_stale_temporaries(cfg.checkpoint_name)
    if cfg.overwrite or (cfg.resume and checkpoint_stem(cfg.resume) == str(Path(cfg.checkpoint_name))):
        return
    found = [p for p in existing_checkpoints(cfg.checkpoint_name) if not cfg.resume or p != Path(cfg.resume)]
    if found:
        raise InvalidInput("checkpoint_name", f"{cfg.checkpoint_name} is taken: {found[-1]} already exists; use "
                                              f"{opt('resume')} {found[-1]} to continue that run, another name, "
                                              f"or {opt('overwrite')} to replace it")


def _device(cfg: TrainConfig, world: distributed.World, log) -> torch.device:
    if not world.distributed:
        return select_device(cfg.gpu, cfg.gpu_backend)
    wants_gpu = cfg.gpu is None or cfg.gpu >= 0
    count = torch.cuda.device_count() if wants_gpu and torch.cuda.is_available() else 0
    if wants_gpu and not count:
        log("no CUDA device: the distributed run trains on the CPU (its ranks use CUDA or the CPU, not MPS)")
    if count > 1 and world.local_rank >= count:
        raise CharRNNError(f"rank {world.rank} has local rank {world.local_rank}, but this machine has only {count} "
                           "CUDA devices (start at most one rank per GPU)")
    # a launcher that shows each rank only its own GPU makes it GPU 0 for every rank
    gpu = (world.local_rank if count > 1 else 0) if count else -1
    device = select_device(gpu, cfg.gpu_backend)
    distributed.init(world, device)
    return device


def _load_data(cfg: TrainConfig, vocab: Vocabulary, world: distributed.World, log):
    """Train and val batches for this rank: in memory, or streamed from the file when large."""
    sizes = split_sizes(cfg.input_h5, ("train", "val"))
    streams = cfg.batch_size * world.size

    def batches(name: str) -> BatchSource | None:
        return open_batches(cfg.input_h5, name, vocab, streams, cfg.seq_length, cfg.stream_data, log)

    train = batches("train")
    if train is None:
        raise InvalidInput("seq_length", f"is too long for the train split of only {sizes['train']:,} tokens: too few "
                                         "for one sequence; use a longer corpus or a smaller one")
    if world.distributed:
        if train.batch_size != streams:
            raise InvalidInput("batch_size", f"{cfg.batch_size} is too large: the train split is too short for "
                                             f"{streams} streams across {world.size} ranks")
        train = train.share(world.rows(cfg.batch_size))
    val, val_shared = batches("val"), False
    if val is None:
        log(f"val split has {sizes['val']:,} tokens, too few for one sequence: no validation loss will be computed")
    elif world.distributed and val.batch_size % world.size == 0:
        val, val_shared = val.share(world.rows(val.batch_size // world.size)), True
    return train, val, val_shared


def _source_checkpoint(cfg: TrainConfig, vocab: Vocabulary) -> Checkpoint | None:
    if not (cfg.resume or cfg.init_from):
        return None
    source = load_checkpoint(cfg.resume or cfg.init_from, newest=bool(cfg.resume))
    if source.vocab != vocab:
        raise InvalidInput("input_json", f"{cfg.input_json} is a different vocabulary than the one {source.path} "
                                         "was trained with")
    if cfg.resume and not source.train_state:
        raise InvalidInput("resume", f"{source.path} holds no training state to resume; use {opt('init_from')} instead")
    return source


def _restore(run: Run, source: Checkpoint) -> None:
    ts = source.train_state
    run.optimizer.load_state_dict(ts["optimizer"])
    run.history = History(**{k: v for k, v in ts["history"].items() if k in {f.name for f in fields(History)}})
    run.start, run.lr = source.iteration, float(ts["learning_rate"])
    state = tuple(t.to(run.device).float() for t in ts["state"]) if ts.get("state") else None
    streams = run.train_batches.batch_size * run.world.size
    if state is not None and state[0].shape[1] == streams:  # the full state: this rank's rows
        run.state = tuple(t[:, run.world.rows(run.train_batches.batch_size)].contiguous() for t in state)
    if run.scaler is not None and ts.get("scaler"):
        run.scaler.load_state_dict(ts["scaler"])
    torch.set_rng_state(ts["rng_cpu"])
    field = {"cuda": "rng_cuda", "mps": "rng_mps"}.get(run.device.type)
    if field and ts.get(field) is not None:
        try:
            if field == "rng_cuda":
                torch.cuda.set_rng_state(ts[field], run.device)
            else:
                torch.mps.set_rng_state(ts[field])
        except RuntimeError as exc:  # the schema checks the shape; the generator has the last word
            raise CorruptFile(source.path, f"train_state.{field}: not a {run.device.type} generator state "
                                           f"({str(exc).splitlines()[0]})") from None
    run.last_checkpoint = source.path


def save(run: Run, i: int, state: tuple | None) -> Path:
    """Write the checkpoint of iteration ``i`` (rank 0; the others only note its name)."""
    cfg = run.config
    if not all(torch.isfinite(p).all() for p in run.model.parameters()):
        raise run.diverged(i, "the weights are no longer finite")
    if not run.world.main:
        run.last_checkpoint = Path(f"{cfg.checkpoint_name}_{i}.pt")
        return run.last_checkpoint
    train_state = {
        "optimizer": run.optimizer.state_dict(),
        "learning_rate": run.lr,
        "state": None if state is None else [t.cpu() for t in state],
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        **({"rng_mps": torch.mps.get_rng_state()} if run.device.type == "mps" else {}),
        **({"scaler": run.scaler.state_dict()} if run.scaler is not None else {}),
        "history": asdict(run.history),
        "config": asdict(cfg),
    }
    json_history = {"opt": asdict(cfg), **asdict(run.history)}
    try:
        path = save_checkpoint(cfg.checkpoint_name, i, run.model, run.vocab, json_history, train_state)
    except CharRNNError as exc:
        kept = f"; {run.last_checkpoint} is intact" if run.last_checkpoint else ""
        raise CharRNNError(f"checkpoint at iteration {i} not saved: {exc}{kept}") from None
    run.last_checkpoint = path
    return path


# -- the loop ----------------------------------------------------------------------------------------
@dataclass
class Step:
    """What one iteration did (the ``step`` event)."""

    i: int
    loss: float  # averaged over every rank's streams
    lr: float
    seconds: float  # wall time of the forward, backward and update
    grad_norm: float | None
    update_ratios: dict


class Events:
    """Calls ``on_<event>(...)`` on every subscriber that has it, in order."""

    def __init__(self, subscribers=()) -> None:
        self.subscribers = list(subscribers)

    def emit(self, event: str, *args) -> None:
        for subscriber in self.subscribers:
            handler = getattr(subscriber, f"on_{event}", None)
            if handler is not None:
                handler(*args)

    def close(self) -> None:
        for subscriber in reversed(self.subscribers):
            if hasattr(subscriber, "close"):
                subscriber.close()


class Trainer:
    """Runs one training job. ``Trainer(config).run()``; the CLI is a thin layer over it."""

    def __init__(self, config: TrainConfig, progress_bar: bool | None = None, quiet: bool = False,
                 subscribers: tuple = (), started: float | None = None) -> None:
        config.validate()
        self.config, self.progress_bar, self.quiet = config, progress_bar, quiet
        self.started = time.monotonic() if started is None else started  # a time budget counts from here
        self.extra_subscribers = list(subscribers)
        self.stop_signal: int | None = None

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Finish the current iteration, save a checkpoint and stop (what Ctrl-C does)."""
        self.stop_signal = signum

    def run(self, handle_signals: bool = False) -> TrainResult:
        """Train to the end (or the time budget, patience, or a stop request) and return the result."""
        from .subscribers import default_subscribers

        threads = torch.get_num_threads()  # --preset auto may train on fewer (charrnn.training.recipe)
        try:
            run = setup(self.config, self._log, self.started)
        except torch.OutOfMemoryError:  # building, calibrating or placing the model on a GPU
            distributed.shutdown()
            torch.set_num_threads(threads)
            raise Unsupported(f"out of memory while setting up the run on the GPU (try a smaller {opt('batch_size')} "
                              f"or {opt('rnn_size')})") from None
        except BaseException:
            distributed.shutdown()
            torch.set_num_threads(threads)
            raise
        self.quiet = self.quiet or not run.world.main
        self._describe(run)
        events, previous = Events(), {}
        try:
            events.subscribers = default_subscribers(run, events, self.progress_bar, self.quiet) + self.extra_subscribers
            previous = _install_signal_handlers(self) if handle_signals else {}
            events.emit("start", run)
            result = self._loop(run, events)
            distributed.barrier(run.world, run.device)  # rank 0 may still be writing the last checkpoint
            return result
        except Diverged as exc:
            events.emit("end", exc.iteration, "diverged")
            raise
        except torch.OutOfMemoryError:
            raise Unsupported(f"out of memory on {describe(run.device)} "
                              f"(try a smaller {opt('batch_size')} or {opt('rnn_size')})") from None
        finally:
            events.close()
            for batches in (run.train_batches, run.val_batches):
                if batches is not None:
                    batches.close()
            distributed.shutdown()
            torch.set_num_threads(threads)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self, run: Run, events: Events) -> TrainResult:
        cfg, world, device = run.config, run.world, run.device
        i, reason = run.start, None
        while reason is None:
            i += 1
            run.set_learning_rate(i)  # the schedule reads run.total, so a cosine decay ends with the run
            stats = cfg.stats_every > 0 and i % cfg.stats_every == 0
            t0 = time.perf_counter()
            out = train_step(run.net, run.optimizer, *run.batch(i), run.state, cfg.grad_clip, run.autocast_dtype,
                             run.groups if stats else None, run.scaler)
            seconds = time.perf_counter() - t0
            run.state = None if i % run.num_train == 0 else out.state  # torch-rnn starts each epoch from zero
            if world.distributed:  # every rank, every iteration, one collective: the mean loss, rank 0's
                # planned end (a time budget's) and whether any rank was signalled, both as of the last step
                plan = (run.control.planned_end or run.total) if world.main else 0
                loss, end, signalled = distributed.sum_all([out.loss, plan, float(self.stop_signal is not None)],
                                                           world, device)
                events.emit("step", Step(i, loss / world.size, run.lr, seconds, out.grad_norm, out.update_ratios))
            else:
                events.emit("step", Step(i, out.loss, run.lr, seconds, out.grad_norm, out.update_ratios))
                end, signalled = run.control.planned_end or run.total, self.stop_signal is not None
            run.total = int(end)  # the only place the plan changes
            due = cfg.checkpoint_every > 0 and i % cfg.checkpoint_every == 0 or i >= run.total
            if due and run.val_batches is not None:  # `due` is alike on every rank: so are these collectives
                val_loss = evaluate(run.model, run.val_batches, device, run.autocast_dtype, cfg.val_max_batches)
                if run.val_shared:
                    val_loss = distributed.sum_all([val_loss], world, device)[0] / world.size
                run.state = None  # torch-rnn resets the state around validation
                events.emit("evaluation", i, val_loss)
            if due or signalled:
                events.emit("checkpoint", i, save(run, i, distributed.gather_rows(run.state, world)))
            if signalled:
                reason = "signal"
            elif i >= run.total:
                reason = "done" if run.total == run.max_total else "budget"
            else:
                reason = run.control.stop_reason
        events.emit("end", i, reason)
        interrupted = (self.stop_signal or signal.SIGTERM) if reason == "signal" else None
        return TrainResult(run.last_checkpoint, i, run.history, interrupted)

    def _log(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)

    def _describe(self, run: Run) -> None:
        m, cfg = run.model.config, run.config
        precision = describe_precision(cfg.precision, run.autocast_dtype, run.device)
        self._log(f"training {m.model_type} {m.num_layers}x{m.rnn_size} ({sum(p.numel() for p in run.model.parameters()):,}"
                  f" parameters) on {describe(run.device)}, precision {precision}")
        self._log(f"{run.num_train} batches of {run.train_batches.batch_size}x{cfg.seq_length} per epoch; "
                  f"iterations {run.start + 1}..{run.total}")


def _install_signal_handlers(trainer: Trainer) -> dict:
    def handler(signum, frame):
        if trainer.stop_signal is not None:  # a second signal: quit at once (writes are atomic)
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        trainer.stop_signal = signum  # only a flag: printing here could re-enter the stream

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    return previous


def train(**options) -> TrainResult:
    """Train from keyword options (those of :class:`TrainConfig`, plus ``preset``, ``quiet`` and
    ``progress_bar``); returns the final checkpoint."""
    started = time.monotonic()
    quiet = options.pop("quiet", False)
    progress_bar = options.pop("progress_bar", None)
    preset = options.pop("preset", None)
    config = resolve_train_config(options, preset, None if quiet else print)
    return Trainer(config, progress_bar=progress_bar, quiet=quiet, started=started).run()
