"""Every option of ``charrnn train`` and ``charrnn lr-find``, defined once (no torch needed).

Each field carries its default, help text, allowed range and choices; the command line builds
its flags from them (``cli.options_of``) and :meth:`TrainConfig.validate` checks them, so the
CLI and the Python API cannot drift. :func:`resolve_train_config` merges explicit options, a
preset and a resumed run's saved configuration, for both front ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from ..config import BACKENDS, INIT_SCHEMES, MODEL_TYPES, PRECISIONS, ModelConfig
from ..errors import InvalidInput, opt
from ..options import (GPU_HELP, NON_NEGATIVE, POSITIVE, Range, _base_type, check_fields,  # noqa: F401 (re-exported)
                       defaults, option)
from ..sampling.options import TEMPERATURE
from .schedules import SCHEDULES


@dataclass
class TrainConfig:
    """Every option of ``charrnn train``; names and defaults follow torch-rnn's train.lua."""

    input_h5: str = option("", "HDF5 file from preprocess.", kind="path")
    input_json: str = option("", "JSON vocabulary from preprocess.", kind="path")
    batch_size: int = option(50, "Streams per minibatch (per process in data-parallel training).", range=POSITIVE)
    seq_length: int = option(50, "Timesteps of backpropagation.", range=POSITIVE)
    init_from: str | None = option(None, "Start from a checkpoint's weights and architecture.", kind="path")
    reset_iterations: bool = option(True, "With --init-from: 0 keeps the checkpoint's iteration counter.", kind="01")
    resume: str | None = option(None, "Continue a run exactly from its checkpoint (file or directory).", kind="path")
    model_type: str = option("lstm", "Recurrent cell.", choices=MODEL_TYPES)
    wordvec_size: int = option(64, "Embedding size.", range=POSITIVE)
    rnn_size: int = option(128, "Hidden units per layer.", range=POSITIVE)
    num_layers: int = option(2, "Recurrent layers.", range=POSITIVE)
    dropout: float = option(0.0, "Dropout after each layer.", range=Range(0, 1, high_open=True))
    batchnorm: bool = option(False, "1 = batch normalisation after each layer.", kind="01")
    max_epochs: int = option(50, "Passes over the training split.", range=POSITIVE)
    max_iters: int | None = option(None, "Stop after this many iterations (overrides --max-epochs).", range=POSITIVE)
    time_budget: float | None = option(
        None, "Train for this long (30s, 5m, 2h): the run and its schedule are planned to end on time.",
        range=POSITIVE, kind="duration")
    learning_rate: float = option(2e-3, "Adam's learning rate.", range=POSITIVE)
    grad_clip: float = option(5.0, "Clamp each gradient element to [-c, c]; 0 disables.", range=NON_NEGATIVE)
    lr_decay_every: int = option(5, "Epochs between decays.", range=POSITIVE)
    lr_decay_factor: float = option(0.5, "Multiply the learning rate by this at each decay.",
                                    range=Range(0, 1, low_open=True))
    reset_adam_on_decay: bool = option(False, "Forget Adam's moments at each decay (torch-rnn's quirk).", kind="flag")
    print_every: int = option(1, "Iterations between progress lines; 0 = none.", range=NON_NEGATIVE)
    checkpoint_every: int = option(1000, "Iterations between checkpoints; 0 = only the final one.",
                                   range=NON_NEGATIVE)
    checkpoint_name: str = option("cv/checkpoint", "Checkpoints are written as <name>_<iteration>.pt and .json.")
    overwrite: bool = option(False, "Replace the checkpoints of an earlier run of the same name.", kind="flag")
    val_max_batches: int | None = option(
        None, "Validate on the first N batches of the val split only (for huge corpora).", range=POSITIVE)
    keep_last: int | None = option(None, "Keep only the newest N checkpoints of this run.", range=POSITIVE)
    keep_best: bool = option(False, "With --keep-last: also keep the one with the lowest validation loss.",
                             kind="flag")
    patience: int | None = option(None, "Stop after this many validations without improvement.", range=POSITIVE)
    lr_schedule: str = option("step", "step = torch-rnn's decay every --lr-decay-every epochs.", choices=SCHEDULES)
    warmup_iters: int = option(0, "Linear warm-up.", range=NON_NEGATIVE)
    min_lr: float = option(0.0, "Floor for cosine.", range=NON_NEGATIVE)
    weight_init: str = option("torch-rnn", "Weight initialisation.", choices=INIT_SCHEMES)
    init_std: float = option(0.05, "For --weight-init normal.", range=POSITIVE)
    stats_every: int = option(10, "Record gradient norm and update:parameter ratios every N iterations; 0 = never.",
                              range=NON_NEGATIVE)
    sample_every: int = option(0, "Print a sample every N iterations; 0 = never.", range=NON_NEGATIVE)
    sample_length: int = option(200, "Characters per sample during training.", range=POSITIVE)
    sample_temperature: float = option(1.0, "Temperature of samples during training.", range=TEMPERATURE)
    tensorboard: str | None = option(None, "Write TensorBoard logs to this directory.", kind="dir")
    speed_benchmark: bool = option(False, "1 = record the time of every iteration.", kind="01")
    memory_benchmark: bool = option(False, "1 = record memory use every iteration.", kind="01")
    gpu: int | None = option(None, GPU_HELP)
    gpu_backend: str = option("cuda", "GPU backend.", choices=BACKENDS)
    precision: str = option("auto", "auto: bf16 where the hardware has it natively (AMX, AVX512-BF16, CUDA 8.0+), "
                                    "else fp32; weights stay fp32.", choices=PRECISIONS)
    seed: int = option(123, "Random seed: identical runs give identical losses on the CPU.")
    max_loss_factor: float = option(3.0, "Stop when the loss exceeds this multiple of its first value; 0 disables.",
                                    range=NON_NEGATIVE)
    stream_data: bool | None = option(None, "Stream the splits from the file (None: those over 8M tokens).",
                                      cli=False)
    recipe: str | None = option(None, "What --preset auto chose and why, as JSON text (charrnn.training.recipe); set by the "
                                      "run.", cli=False)

    def __post_init__(self) -> None:
        for f in fields(self):  # torch-rnn style 0/1 for booleans
            value = getattr(self, f.name)
            if _base_type(f) == "bool" and type(value) is int and value in (0, 1):
                setattr(self, f.name, bool(value))

    def validate(self) -> None:
        """Raise :class:`InvalidInput` naming the first option with a bad value."""
        check_fields(self)
        if self.batchnorm and self.batch_size * self.seq_length < 2:
            raise InvalidInput("batchnorm", "needs more than one position per batch "
                                            f"({opt('batch_size')} x {opt('seq_length')} >= 2)")
        for name in INPUT_PATHS:
            if not getattr(self, name):
                raise InvalidInput(name, f"is required (or {opt('resume')} a checkpoint)")

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size, self.model_type, self.wordvec_size, self.rnn_size,
                           self.num_layers, self.dropout, self.batchnorm)


@dataclass
class LRFindOptions:
    """The options of ``charrnn lr-find`` beyond the training ones it shares."""

    start_lr: float = option(1e-5, "The first (lowest) learning rate tried.", range=POSITIVE)
    end_lr: float = option(1.0, "The last (highest) learning rate tried.", range=POSITIVE)
    num_iters: int = option(100, "Iterations (one rate each).", range=Range(5))


LR_FIND_TRAIN_OPTIONS = ("input_h5", "input_json", "model_type", "wordvec_size", "rnn_size", "num_layers", "dropout",
                         "batchnorm", "batch_size", "seq_length", "grad_clip", "weight_init", "init_std", "gpu",
                         "gpu_backend", "precision", "seed")

# -- explicit options + preset + resumed run -> one configuration ------------------------------------
OUTPUT_PATHS = ("checkpoint_name", "tensorboard")  # where a run writes or deletes: never taken from a file
INPUT_PATHS = ("input_h5", "input_json")  # what a run reads: taken from a file only if it exists


def resolve_train_config(explicit: dict[str, Any], preset: str | None = None,
                         log: Callable[[str], None] | None = None) -> TrainConfig:
    """The configuration of a run, for both the CLI and :func:`charrnn.train`.

    Precedence: options given explicitly, then (with ``resume``) the resumed run's saved
    configuration, then the preset, then the defaults. From a resumed checkpoint, output paths
    are never trusted: the checkpoint name comes from the command line or from the resumed
    file's own location, a TensorBoard directory only from the command line; its stored input
    files are used only if they exist, and are named in the log.
    """
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(explicit) - known)
    if unknown:
        raise TypeError(f"unknown training option(s): {', '.join(unknown)}")
    merged: dict[str, Any] = {}
    if preset:
        from .presets import PRESETS
        if preset not in PRESETS:
            raise InvalidInput("preset", f"must be one of {', '.join(PRESETS)} (got {preset!r})")
        merged.update(PRESETS[preset])
    if explicit.get("resume"):
        merged.update(_resumed_options(explicit, log or (lambda message: None)))
    elif _auto_recipe(explicit, preset):  # chosen by the run itself, after a calibration (charrnn.training.recipe)
        merged["recipe"] = json.dumps({"auto": True, "explicit": sorted(explicit)})
    resumed = merged.get("resume")  # the file a resumed directory resolved to
    merged.update(explicit)
    if resumed:
        merged["resume"] = resumed
    return TrainConfig(**merged)


ARCHITECTURE = ("model_type", "wordvec_size", "rnn_size", "num_layers", "batchnorm")


def _auto_recipe(explicit: dict[str, Any], preset: str | None) -> bool:
    """--preset auto, or a --time-budget with no preset and no architecture flag (a new model only)."""
    if explicit.get("init_from"):
        return False
    if preset == "auto":
        if not explicit.get("time_budget"):
            raise InvalidInput("preset", f"auto needs {opt('time_budget')} (the recipe is chosen for the time it has)")
        return True
    return preset is None and bool(explicit.get("time_budget")) and not any(k in explicit for k in ARCHITECTURE)


def _resumed_options(explicit: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    from ..checkpoint import check_options, checkpoint_stem, load_checkpoint

    source = load_checkpoint(explicit["resume"], newest=True)
    saved = source.train_state.get("config") if source.train_state else None
    if not saved:
        raise InvalidInput("resume", f"{source.path} holds no training state to resume; use {opt('init_from')} instead")
    saved = check_options(source.path, saved, TrainConfig)  # known options, each of its type
    options = {k: v for k, v in saved.items() if k not in OUTPUT_PATHS + INPUT_PATHS}
    for name in INPUT_PATHS:
        stored = saved.get(name)
        if name in explicit or not isinstance(stored, str) or not stored:
            continue
        if Path(stored).is_file():
            options[name] = stored
            log(f"resuming with --{name.replace('_', '-')} {stored} (stored in the checkpoint)")
        else:
            raise InvalidInput(name, f"is required: the file stored in {source.path.name} ({stored}) does not exist")
    if saved.get("tensorboard") and "tensorboard" not in explicit:
        log("TensorBoard logging is not resumed from the checkpoint: add --tensorboard DIR to continue it")
    options.update(resume=str(source.path), init_from=None, overwrite=False,
                   checkpoint_name=checkpoint_stem(source.path))
    return options
