"""Training, as torch-rnn's train.lua does it, with exact resume and crash-safe checkpoints."""

from __future__ import annotations

import math
import re
import signal
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from .checkpoint import (Checkpoint, checkpoint_paths, existing_checkpoints, load_checkpoint,
                         remove_stale_temporaries, save_checkpoint)
from . import distributed
from .data import LazyStreams, StreamBatches, load_splits, make_batches, split_sizes
from .device import describe, select_device
from .errors import CharRNNError
from .precision import PRECISIONS, autocast as _autocast, describe_precision, resolve_precision  # noqa: F401
from .model import CELLS, INIT_SCHEMES, CharRNN, ModelConfig, detach_state, parameter_groups
from .schedules import SCHEDULES, learning_rate
from .progress import Progress
from .vocab import Vocabulary

LAZY_TOKENS = 8_000_000  # splits longer than this are streamed from the HDF5 file, not loaded whole
LOG2E = 1 / math.log(2)


@dataclass
class TrainConfig:
    """Every option of ``charrnn train``; names and defaults follow torch-rnn's train.lua."""

    input_h5: str = ""
    input_json: str = ""
    batch_size: int = 50
    seq_length: int = 50
    init_from: str | None = None
    reset_iterations: bool = True
    model_type: str = "lstm"
    wordvec_size: int = 64
    rnn_size: int = 128
    num_layers: int = 2
    dropout: float = 0.0
    batchnorm: bool = False
    max_epochs: int = 50
    max_iters: int | None = None
    time_budget: float | None = None
    learning_rate: float = 2e-3
    grad_clip: float = 5.0
    lr_decay_every: int = 5
    lr_decay_factor: float = 0.5
    reset_adam_on_decay: bool = False
    print_every: int = 1
    checkpoint_every: int = 1000
    checkpoint_name: str = "cv/checkpoint"
    speed_benchmark: bool = False
    memory_benchmark: bool = False
    gpu: int | None = None
    gpu_backend: str = "cuda"
    precision: str = "auto"
    seed: int = 123
    resume: str | None = None
    overwrite: bool = False
    max_loss_factor: float = 3.0
    keep_last: int | None = None
    keep_best: bool = False
    patience: int | None = None
    lr_schedule: str = "step"
    warmup_iters: int = 0
    min_lr: float = 0.0
    weight_init: str = "torch-rnn"
    init_std: float = 0.05
    stats_every: int = 10
    sample_every: int = 0
    sample_length: int = 200
    sample_temperature: float = 1.0
    tensorboard: str | None = None
    stream_data: bool | None = None  # None: stream splits longer than LAZY_TOKENS from the file
    val_max_batches: int | None = None  # validate on the first N batches only (huge corpora)

    def validate(self) -> None:
        positive = ("batch_size", "seq_length", "wordvec_size", "rnn_size", "num_layers", "max_epochs",
                    "learning_rate", "lr_decay_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise CharRNNError(f"--{name.replace('_', '-')} must be positive (got {getattr(self, name)})")
        for name in ("max_iters", "time_budget", "keep_last", "patience", "val_max_batches"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise CharRNNError(f"--{name.replace('_', '-')} must be positive (got {value})")
        for name in ("print_every", "checkpoint_every", "grad_clip", "max_loss_factor", "warmup_iters", "min_lr",
                     "stats_every", "sample_every"):
            if getattr(self, name) < 0:
                raise CharRNNError(f"--{name.replace('_', '-')} must not be negative (got {getattr(self, name)})")
        if not 0 <= self.dropout < 1:
            raise CharRNNError(f"--dropout must lie in [0, 1) (got {self.dropout})")
        if not 0 < self.lr_decay_factor <= 1:
            raise CharRNNError(f"--lr-decay-factor must lie in (0, 1] (got {self.lr_decay_factor})")
        if self.batchnorm and self.batch_size * self.seq_length < 2:
            raise CharRNNError("--batchnorm 1 needs more than one position per batch (--batch-size x --seq-length >= 2)")
        if self.lr_schedule not in SCHEDULES:
            raise CharRNNError(f"--lr-schedule must be one of {', '.join(SCHEDULES)} (got {self.lr_schedule!r})")
        if self.weight_init not in INIT_SCHEMES:
            raise CharRNNError(f"--weight-init must be one of {', '.join(INIT_SCHEMES)} (got {self.weight_init!r})")
        if self.init_std <= 0 or self.sample_length <= 0 or self.sample_temperature <= 0:
            raise CharRNNError("--init-std, --sample-length and --sample-temperature must be positive")
        if self.model_type not in CELLS:
            raise CharRNNError(f"--model-type must be one of {', '.join(CELLS)} (got {self.model_type!r})")
        if self.precision not in PRECISIONS:
            raise CharRNNError(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if not self.resume and not (self.input_h5 and self.input_json):
            raise CharRNNError("--input-h5 and --input-json are required (or --resume a checkpoint)")

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size, self.model_type, self.wordvec_size, self.rnn_size,
                           self.num_layers, self.dropout, self.batchnorm)


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


class TrainingInterrupted(CharRNNError):
    """Raised after a signal: the run was saved and can be resumed."""


def checkpoint_stem(path: Path) -> str:
    """``cv/checkpoint_1000.pt`` -> ``cv/checkpoint``."""
    return re.sub(r"_\d+$", "", str(path.with_suffix("")))


def evaluate(model: CharRNN, batches: StreamBatches, device: torch.device,
             autocast_dtype: torch.dtype | None = None, max_batches: int | None = None) -> float:
    """Mean cross-entropy (nats) over every batch of a split (or the first ``max_batches``),
    from a zero state, as torch-rnn does."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    state = None
    with torch.inference_mode(), _autocast(device, autocast_dtype):
        count = min(batches.num_batches, max_batches or batches.num_batches)
        for k in range(count):
            x, y = (torch.from_numpy(a).to(device) for a in batches.batch(k))
            loss, state = model.loss(x, y, state)
            total += loss
    model.train(was_training)
    return float(total) / count


class Trainer:
    """Runs one training job. ``Trainer(config).run()``; the CLI is a thin layer over it."""

    def __init__(self, config: TrainConfig, progress_bar: bool | None = None, quiet: bool = False) -> None:
        config.validate()
        self.config = config
        self.progress_bar, self.quiet = progress_bar, quiet
        self.stop_signal: int | None = None
        self.last_checkpoint: Path | None = None
        self.writer = None

    # -- signals ----------------------------------------------------------------------------
    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Finish the current iteration, save a checkpoint and stop (what Ctrl-C does)."""
        self.stop_signal = signum

    def _install_signal_handlers(self) -> dict:
        def handler(signum, frame):
            if self.stop_signal is not None:  # a second signal: quit at once (writes are atomic)
                signal.signal(signum, signal.SIG_DFL)
                raise KeyboardInterrupt
            self.stop_signal = signum  # only a flag: printing here could re-enter the stream

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return previous

    # -- set-up ------------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)

    def _load_data(self, vocab: Vocabulary):
        """Train and val batches for this rank: in memory, or streamed from the file when large."""
        cfg, world = self.config, self.world
        sizes = split_sizes(cfg.input_h5, ("train", "val"))
        lazy = {name: cfg.stream_data if cfg.stream_data is not None else n > LAZY_TOKENS for name, n in sizes.items()}
        loaded = load_splits(cfg.input_h5, vocab, [n for n in sizes if not lazy[n]])
        streams = cfg.batch_size * world.size

        def batches(name: str):
            if not lazy[name]:
                return make_batches(loaded[name], streams, cfg.seq_length, name, self._log)
            try:
                return LazyStreams(cfg.input_h5, name, len(vocab), streams, cfg.seq_length, log=self._log)
            except CharRNNError:
                return None

        train = batches("train")
        if train is None:
            raise CharRNNError(
                f"the train split has only {sizes['train']:,} tokens: too few for one sequence of "
                f"--seq-length {cfg.seq_length}; use a longer corpus or a smaller --seq-length")
        if world.distributed:
            if train.batch_size != streams:
                raise CharRNNError(f"the train split is too short for {streams} streams across {world.size} ranks")
            train = train.share(world.rows(cfg.batch_size))
        val = batches("val")
        self.val_split_across_ranks = False
        if val is None:
            self._log(f"val split has {sizes['val']:,} tokens, too few for one sequence: "
                      "no validation loss will be computed")
        elif world.distributed and val.batch_size % world.size == 0:
            val = val.share(world.rows(val.batch_size // world.size))
            self.val_split_across_ranks = True
        self.lazy_train = lazy["train"]
        return train, val

    def _check_checkpoint_name(self) -> None:
        cfg = self.config
        remove_stale_temporaries(cfg.checkpoint_name)
        if cfg.resume or cfg.overwrite:
            return
        found = existing_checkpoints(cfg.checkpoint_name)
        if found:
            raise CharRNNError(
                f"{found[-1]} already exists: use --resume {found[-1]} to continue that run, another "
                "--checkpoint-name, or --overwrite to replace it")

    def _setup(self) -> None:
        cfg = self.config
        self._check_checkpoint_name()
        self.world = world = distributed.world_from_env()
        if world.distributed:
            self.quiet = self.quiet or not world.main
            gpu = world.local_rank if (cfg.gpu is None or cfg.gpu >= 0) and torch.cuda.is_available() else -1
            self.device = device = select_device(gpu, cfg.gpu_backend)
            distributed.init(world, device)
        else:
            self.device = device = select_device(cfg.gpu, cfg.gpu_backend)
        self.vocab = vocab = Vocabulary.load(cfg.input_json)
        self.train_batches, self.val_batches = self._load_data(vocab)

        source: Checkpoint | None = None
        if cfg.resume or cfg.init_from:
            source = load_checkpoint(cfg.resume or cfg.init_from)
            if source.vocab != vocab:
                raise CharRNNError(f"{source.path} was trained with a different vocabulary than {cfg.input_json}")
            if cfg.resume and not source.train_state:
                raise CharRNNError(f"{source.path} holds no training state to resume; use --init-from instead")

        torch.manual_seed(cfg.seed)
        self.model_config = source.model_config if source else cfg.model_config(len(vocab))
        if source:
            self.model = source.build_model(device)
        else:
            self.model = CharRNN(self.model_config)
            if cfg.weight_init != "torch-rnn":
                self.model.reset_parameters(cfg.weight_init, cfg.init_std)
            self.model.to(device)
        self.model.train()
        self.net = self.model
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel
            self.net = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.groups = parameter_groups(self.model)
        self.params = list(self.model.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.learning_rate, **_adam_kwargs(device))
        self.autocast_dtype = resolve_precision(cfg.precision, device)

        self.history, self.start, self.lr, self.state = History(), 0, cfg.learning_rate, None
        if cfg.resume:
            self._restore(source)
        elif source and not cfg.reset_iterations:
            self.start = source.iteration
        _set_lr(self.optimizer, self.lr)
        self.num_train = self.train_batches.num_batches
        self.total = cfg.max_iters if cfg.max_iters else cfg.max_epochs * self.num_train
        if self.start >= self.total:
            raise CharRNNError(f"nothing to do: the checkpoint is at iteration {self.start} and the run ends at "
                               f"{self.total} (raise --max-epochs or --max-iters)")
        if not self.lazy_train:  # a small split lives on the device whole
            self.xs = torch.from_numpy(self.train_batches.inputs).to(device)
            self.ys = torch.from_numpy(self.train_batches.targets).to(device)

    def _restore(self, source: Checkpoint) -> None:
        ts = source.train_state
        self.optimizer.load_state_dict(ts["optimizer"])
        self.history = History(**ts["history"])
        self.start, self.lr = source.iteration, float(ts["learning_rate"])
        state = tuple(t.to(self.device) for t in ts["state"]) if ts.get("state") else None
        streams = self.train_batches.batch_size * self.world.size
        if state is not None and state[0].shape[1] == streams:  # the full state: this rank's rows
            self.state = tuple(t[:, self.world.rows(self.train_batches.batch_size)].contiguous() for t in state)
        torch.set_rng_state(ts["rng_cpu"])
        if self.device.type == "cuda" and ts.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ts["rng_cuda"], self.device)
        self.last_checkpoint = source.path

    # -- one iteration ---------------------------------------------------------------------------
    def _step(self, k: int, stats: bool = False) -> float:
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        if self.lazy_train:
            x, y = (torch.from_numpy(a).to(self.device) for a in self.train_batches.batch(k))
        else:
            x, y = self.xs[k], self.ys[k]
        with _autocast(self.device, self.autocast_dtype):
            loss, state = self.net(x, self.state, y)
        loss.backward()
        if stats:
            before = self._record_grad_norm()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_value_(self.params, cfg.grad_clip)
        self.optimizer.step()
        if stats:
            self._record_update_ratios(before)
        self.state = detach_state(state)
        return loss.item()

    def _record_grad_norm(self) -> dict:
        """Global gradient norm (before clipping); returns the parameters before the update."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else torch.zeros(())
        self.history.grad_norm_history.append(float(norm))
        return {name: [p.detach().clone() for p in ps] for name, ps in self.groups.items()}

    def _record_update_ratios(self, before: dict) -> None:
        """log10(mean |update| / mean |parameter|) per layer: about -3 is healthy."""
        for name, ps in self.groups.items():
            update = sum(float((p.detach() - b).abs().sum()) for p, b in zip(ps, before[name]))
            size = sum(float(p.detach().abs().sum()) for p in ps)
            ratio = math.log10(update / size) if update > 0 and size > 0 else None  # None: no update
            self.history.update_ratio_history.setdefault(name, []).append(ratio)

    def _check_loss(self, i: int, loss: float) -> None:
        first = self.history.train_loss_history[0]
        factor = self.config.max_loss_factor
        if not math.isfinite(loss):
            raise self._diverged(i, f"the loss is {loss}")
        if factor and loss > factor * first:
            raise self._diverged(i, f"the loss {loss:.3f} exceeds {factor:g}x its starting value {first:.3f} "
                                    "(--max-loss-factor 0 disables this check)")

    def _set_learning_rate(self, i: int) -> None:
        cfg = self.config
        lr = learning_rate(i, cfg.learning_rate, self.total, self.num_train, cfg.lr_schedule, cfg.lr_decay_every,
                           cfg.lr_decay_factor, cfg.warmup_iters, cfg.min_lr)
        if lr != self.lr:
            if cfg.reset_adam_on_decay and lr < self.lr and cfg.lr_schedule == "step":
                self.optimizer.state.clear()  # torch-rnn's quirk, on request
            self.lr = lr
            _set_lr(self.optimizer, lr)

    def _sample(self, i: int) -> None:
        """Print a short sample; uses its own random stream, so training is not disturbed."""
        from .sampling import sample_from_model

        cfg = self.config
        text = sample_from_model(self.model, self.vocab, cfg.sample_length, cfg.sample_temperature, seed=cfg.seed + i)
        shown = text if isinstance(text, str) else text.decode("utf-8", errors="replace")
        self.progress.write(f"--- sample at i = {i} (temperature {cfg.sample_temperature:g}) ---\n{shown}\n---")
        if self.writer is not None:
            self.writer.add_text("sample", shown, i)

    def _log_scalars(self, i: int, loss: float, stats: bool) -> None:
        w = self.writer
        w.add_scalar("train/loss", loss, i)
        w.add_scalar("train/bpc", loss * LOG2E, i)
        w.add_scalar("train/learning_rate", self.lr, i)
        if stats:
            w.add_scalar("train/grad_norm", self.history.grad_norm_history[-1], i)
            for name, values in self.history.update_ratio_history.items():
                w.add_scalar(f"update_ratio/{name}", values[-1], i)

    # -- checkpoints -----------------------------------------------------------------------------
    def _validate(self, i: int) -> float | None:
        if self.val_batches is None:
            return None
        val_loss = evaluate(self.model, self.val_batches, self.device, self.autocast_dtype, self.config.val_max_batches)
        if self.val_split_across_ranks:
            val_loss = distributed.sum_all([val_loss], self.world, self.device)[0] / self.world.size
        self.state = None  # torch-rnn resets the state around validation
        self.progress.write(f"val_loss = {val_loss:f} ({val_loss * LOG2E:.4f} bits/char) at i = {i}")
        if not math.isfinite(val_loss):
            raise self._diverged(i, f"the validation loss is {val_loss}")
        self.history.val_loss_history.append(val_loss)
        self.history.val_loss_history_it.append(i)
        if self.writer is not None:
            self.writer.add_scalar("val/loss", val_loss, i)
            self.writer.add_scalar("val/bpc", val_loss * LOG2E, i)
        return val_loss

    def _save(self, i: int) -> Path:
        cfg = self.config
        if not all(torch.isfinite(p).all() for p in self.params):
            raise self._diverged(i, "the weights are no longer finite")
        state = distributed.gather_rows(self.state, self.world)
        if not self.world.main:  # only rank 0 writes
            self.last_checkpoint = checkpoint_paths(cfg.checkpoint_name, i)[0]
            return self.last_checkpoint
        train_state = {
            "optimizer": self.optimizer.state_dict(),
            "learning_rate": self.lr,
            "state": None if state is None else [t.cpu() for t in state],
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "history": asdict(self.history),
            "config": asdict(cfg),
        }
        json_history = {"opt": asdict(cfg), **asdict(self.history)}
        try:
            path = save_checkpoint(cfg.checkpoint_name, i, self.model, self.vocab, json_history, train_state)
        except CharRNNError as exc:
            kept = f"; {self.last_checkpoint} is intact" if self.last_checkpoint else ""
            raise CharRNNError(f"checkpoint at iteration {i} not saved: {exc}{kept}") from None
        self.last_checkpoint = path
        self.progress.write(f"saved {path}")
        self._prune()
        return path

    def _best_iteration(self) -> int | None:
        h = self.history
        if not h.val_loss_history:
            return None
        return h.val_loss_history_it[min(range(len(h.val_loss_history)), key=h.val_loss_history.__getitem__)]

    def _prune(self) -> None:
        """Apply --keep-last (and --keep-best): delete older checkpoints of this run."""
        cfg = self.config
        if not cfg.keep_last:
            return
        keep_best = f"_{self._best_iteration()}.pt" if cfg.keep_best else None
        for path in existing_checkpoints(cfg.checkpoint_name)[:-cfg.keep_last]:
            if keep_best and path.name.endswith(keep_best) or path == self.last_checkpoint:
                continue
            for p in (path, path.with_suffix(".json")):
                p.unlink(missing_ok=True)

    def _patience_exhausted(self) -> bool:
        patience = self.config.patience
        h = self.history.val_loss_history
        if not patience or len(h) <= patience:
            return False
        return min(h[-patience:]) >= min(h[:-patience])

    def _diverged(self, i: int, why: str) -> CharRNNError:
        last = self.last_checkpoint
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written before it"
        return CharRNNError(f"training diverged at iteration {i}: {why}; {where}. Try a lower --learning-rate")

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, handle_signals: bool = False) -> TrainResult:
        """Train to the end (or the time budget, patience, or a stop request) and return the result."""
        cfg = self.config
        try:
            self._setup()
        except BaseException:
            distributed.shutdown()
            raise
        m = self.model_config
        self._log(f"training {m.model_type} {m.num_layers}x{m.rnn_size} ({sum(p.numel() for p in self.params):,} "
                  f"parameters) on {describe(self.device)}, "
                  f"precision {describe_precision(cfg.precision, self.autocast_dtype, self.device)}")
        self._log(f"{self.num_train} batches of {self.train_batches.batch_size}x{cfg.seq_length} per epoch; "
                  f"iterations {self.start + 1}..{self.total}")
        self.progress = Progress(self.total, self.start, self.num_train, cfg.max_epochs, cfg.print_every,
                                 bar=self.progress_bar, quiet=self.quiet)
        previous_handlers = self._install_signal_handlers() if handle_signals else {}
        started = time.monotonic()
        deadline = started + cfg.time_budget if cfg.time_budget else None
        self.max_total = self.total
        self.writer = _tensorboard_writer(cfg.tensorboard) if cfg.tensorboard else None
        history = self.history
        try:
            i = self.start
            while i < self.total:
                i += 1
                self._set_learning_rate(i)
                stats = cfg.stats_every > 0 and i % cfg.stats_every == 0
                if stats:
                    history.stats_iterations.append(i)
                t0 = time.perf_counter()
                loss = self._step((i - 1) % self.num_train, stats)
                if self.world.distributed:  # the mean loss over all streams; a stop anywhere stops all
                    total_loss, stops = distributed.sum_all([loss, float(self.stop_signal is not None)],
                                                            self.world, self.device)
                    loss = total_loss / self.world.size
                    if stops and self.stop_signal is None:
                        self.stop_signal = signal.SIGTERM
                if cfg.speed_benchmark:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    history.forward_backward_times.append((time.perf_counter() - t0) * 1000)
                if cfg.memory_benchmark:
                    history.memory_usage.append(_memory_in_use(self.device))
                history.train_loss_history.append(loss)
                history.learning_rate_history.append(self.lr)
                self._check_loss(i, loss)
                self.progress.update(i, loss, self.lr)
                if self.writer is not None:
                    self._log_scalars(i, loss, stats)
                if i % self.num_train == 0:
                    self.state = None  # end of an epoch
                if cfg.sample_every and i % cfg.sample_every == 0:
                    self._sample(i)
                if deadline is not None:
                    self._plan_to_deadline(i, started, deadline)
                    self.total = distributed.broadcast_int(self.total, self.world, self.device)
                if (cfg.checkpoint_every > 0 and i % cfg.checkpoint_every == 0) or i == self.total:
                    self._validate(i)
                    self._save(i)
                    if self._patience_exhausted() and i < self.total:
                        self.progress.write(f"no improvement in {cfg.patience} validations: stopping at {i} "
                                            f"(best: iteration {self._best_iteration()})")
                        self.total = i
                if self.stop_signal is not None:
                    self.progress.write(f"caught {signal.Signals(self.stop_signal).name} at iteration {i}")
                    if self.last_checkpoint is None or not self.last_checkpoint.name.endswith(f"_{i}.pt"):
                        self._save(i)
                    return TrainResult(self.last_checkpoint, i, history, self.stop_signal)
        finally:
            self.progress.close()
            if self.writer is not None:
                self.writer.close()
            if self.world.distributed:
                distributed.shutdown()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        return TrainResult(self.last_checkpoint, self.total, history)

    def _plan_to_deadline(self, i: int, started: float, deadline: float) -> None:
        """Set the run's length so that it, its final validation and checkpoint end by the deadline.

        The learning-rate schedule reads ``self.total``, so a cosine decay ends at the deadline.
        """
        now = time.monotonic()
        done = i - self.start
        per_iter = (now - started) / done
        val_batches = self.val_batches.num_batches if self.val_batches is not None else 0
        val_batches = min(val_batches, self.config.val_max_batches or val_batches)
        reserve = val_batches * per_iter / 3 + 0.25  # a forward pass costs about a third of a step
        if now + per_iter + reserve >= deadline:
            if i < self.total:
                self.total = i
                self.progress.write(f"time budget of {self.config.time_budget:g} s reached at iteration {i}")
            return
        if done >= 5 and (done % 10 == 0 or done == 5):
            planned = i + int((deadline - now - reserve) / per_iter)
            self.total = max(i + 1, min(self.max_total, planned))
            self.progress.set_total(self.total)


def _tensorboard_writer(logdir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CharRNNError("--tensorboard needs the tensorboard package: pip install 'charrnn[tensorboard]'") from None
    return SummaryWriter(logdir)


def _adam_kwargs(device: torch.device) -> dict:
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _memory_in_use(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def config_for_resume(checkpoint: str | Path, **overrides) -> TrainConfig:
    """The saved configuration of a checkpoint, with ``overrides`` applied, for ``--resume``."""
    source = load_checkpoint(checkpoint)
    saved = source.train_state.get("config") if source.train_state else None
    if not saved:
        raise CharRNNError(f"{source.path} holds no training state to resume; use --init-from instead")
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    cfg = replace(cfg, resume=str(source.path), init_from=None, overwrite=False,
                  checkpoint_name=checkpoint_stem(source.path))
    return replace(cfg, **overrides)


def train(**options) -> TrainResult:
    """Train from keyword options (those of :class:`TrainConfig`); returns the final checkpoint."""
    quiet = options.pop("quiet", False)
    progress_bar = options.pop("progress_bar", None)
    preset = options.pop("preset", None)
    if preset:
        from .presets import PRESETS
        if preset not in PRESETS:
            raise CharRNNError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
        options = {**PRESETS[preset], **options}
    if options.get("resume"):
        resume = options.pop("resume")
        config = config_for_resume(resume, **options)
    else:
        config = TrainConfig(**options)
    return Trainer(config, progress_bar=progress_bar, quiet=quiet).run()
