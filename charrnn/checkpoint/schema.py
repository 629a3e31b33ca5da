"""The checkpoint schema: one validation of the plain payload that every reader produces.

charrnn's ``.pt`` reader and the ``.t7`` converter (and ``torch.load(weights_only=True)``,
should a caller use it) all yield the same plain dict::

    {"format": "charrnn-checkpoint", "version": 1, "model_config": {...}, "vocab": {...},
     "model": {key: array}, "iteration": int, "train_state": {...} or {}, "info": {...}}

:func:`validate_payload` checks it field by field before anything is built: the architecture
against sane limits, every weight's key and shape against :mod:`charrnn.layout`, the
vocabulary, and the resume state (optimizer against the model's parameters, RNG state,
carried hidden state, histories, options). Every problem is a :class:`CorruptFile` that
names the field, so every command refuses the same file with the same message. Arrays may
be NumPy arrays or torch tensors; this module never imports torch.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import CharRNNError, CorruptFile
from ..layout import CELL_TYPES, LIMITS, is_integer, parameter_shapes, state_shapes
from ..vocab import Vocabulary

FORMAT = "charrnn-checkpoint"
VERSION = 1
MAX_DEPTH = 32  # nesting of plain values (options, histories)
MAX_INT = 2 ** 63
MAX_STRING = 1 << 16
MAX_STREAMS = 1 << 20  # rows of a carried hidden state
OPTIMIZER_GROUPS = 1  # charrnn's Adam has one group over all parameters, in model.parameters() order
ADAM_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay")
ADAM_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


@dataclass
class Payload:
    """A checkpoint's validated contents (tensors as NumPy arrays or torch tensors)."""

    config: ModelConfig
    vocab: Vocabulary
    model_state: dict
    iteration: int
    train_state: dict = field(default_factory=dict)  # empty when saved without resume state
    info: dict = field(default_factory=dict)  # options and histories of an imported torch-rnn checkpoint


class _Fail:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, where: str, problem: str) -> CorruptFile:
        return CorruptFile(self.path, f"damaged checkpoint: '{where}' {problem}")


# -- values -------------------------------------------------------------------------------------------
def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_number(x) -> bool:
    return (_is_int(x) and abs(int(x)) < MAX_INT) or (isinstance(x, (float, np.floating)) and math.isfinite(x))


def array_info(x) -> tuple[tuple[int, ...], str] | None:
    """(shape, dtype kind) of a NumPy array or torch tensor; None for anything else."""
    if isinstance(x, np.ndarray):
        return x.shape, x.dtype.kind
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        if x.is_floating_point():
            kind = "f"
        else:
            kind = "b" if x.dtype == torch.bool else "u" if x.dtype == torch.uint8 else "i"
        return tuple(x.shape), kind
    return None


def _all_finite(x) -> bool:
    if isinstance(x, np.ndarray):
        return bool(np.isfinite(x).all())
    return bool(sys.modules["torch"].isfinite(x).all())


def _float_array(fail, where: str, x, shape: tuple | None = None, finite: bool = True):
    info = array_info(x)
    if info is None or info[1] != "f":
        raise fail(where, "must be a floating-point tensor")
    if shape is not None and tuple(info[0]) != tuple(shape):
        raise fail(where, f"has shape {tuple(info[0])}, expected {tuple(shape)}")
    if finite and not _all_finite(x):
        raise fail(where, "holds non-finite values")
    return x


def check_plain(fail, where: str, value, arrays: bool = False, depth: int = 0, path: tuple = ()) -> None:
    """Refuse anything but JSON-like values: bounded depth, no cycles, sane numbers and strings."""
    if depth > MAX_DEPTH:
        raise fail(where, "is nested too deeply")
    if value is None or isinstance(value, bool) or _is_number(value):
        return
    if isinstance(value, float):  # inf or nan: JSON-writable, harmless in options and histories
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise fail(where, "holds an over-long string")
        return
    if arrays and array_info(value) is not None:
        return
    if isinstance(value, (list, tuple, dict)):
        if any(value is p for p in path):
            raise fail(where, "contains a reference cycle")
        inner = path + (value,)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict) and not (key is None or isinstance(key, (str, bool)) or _is_number(key)):
                raise fail(where, f"has a key of type {type(key).__name__}")
            check_plain(fail, f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]", item, arrays,
                        depth + 1, inner)
        return
    raise fail(where, f"holds a value of type {type(value).__name__}")


# -- the architecture, vocabulary and weights -----------------------------------------------------------
def _model_config(fail, data) -> ModelConfig:
    if not isinstance(data, dict):
        raise fail("model_config", "is missing or not a table")
    known = {f.name for f in fields(ModelConfig)}
    for key in data:
        if key not in known:
            raise fail(f"model_config.{key}", "is not a known architecture field")
    if "vocab_size" not in data:
        raise fail("model_config.vocab_size", "is missing")
    for name, high in LIMITS.items():
        if name in data and not (_is_int(data[name]) and 1 <= data[name] <= high):
            raise fail(f"model_config.{name}", f"must be a whole number in 1..{high} (found {data[name]!r:.40})")
    if "model_type" in data and data["model_type"] not in CELL_TYPES:
        raise fail("model_config.model_type", f"must be one of {', '.join(CELL_TYPES)} (found {data['model_type']!r:.40})")
    dropout = data.get("dropout", 0.0)
    if not (_is_number(dropout) and 0 <= dropout < 1):
        raise fail("model_config.dropout", f"must be a number in [0, 1) (found {dropout!r:.40})")
    if data.get("batchnorm", False) not in (True, False):  # 0 and 1 compare equal to the booleans
        raise fail("model_config.batchnorm", f"must be true or false (found {data['batchnorm']!r:.40})")
    return ModelConfig(**{**data, **{k: int(data[k]) for k in LIMITS if k in data},
                          "dropout": float(dropout), "batchnorm": bool(data.get("batchnorm", False))})


def _vocab(fail, data, config: ModelConfig) -> Vocabulary:
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), (list, tuple)):
        raise fail("vocab.tokens", "is missing or not a list")
    tokens = data["tokens"]
    if not all(_is_int(t) for t in tokens) or data.get("byte_mode") not in (True, False):
        raise fail("vocab", "must hold whole-number tokens and a true/false byte_mode")
    if len(tokens) != config.vocab_size:
        raise fail("vocab.tokens", f"holds {len(tokens)} tokens but the model's vocab_size is {config.vocab_size}")
    try:
        return Vocabulary(tuple(int(t) for t in tokens), bool(data["byte_mode"]))
    except CharRNNError as exc:
        raise fail("vocab.tokens", f"is not a valid vocabulary ({exc})") from None


def describe(config: ModelConfig) -> str:
    bn = ", batchnorm" if config.batchnorm else ""
    return f"{config.model_type} {config.num_layers}x{config.rnn_size}, embedding {config.wordvec_size}{bn}"


def _weights(fail, model, config: ModelConfig) -> dict:
    if not isinstance(model, dict):
        raise fail("model", "is missing or not a table of tensors")
    expected = state_shapes(config)
    for key in model:
        if key not in expected:
            raise fail(f"model.{key}", f"is not a weight of the stored architecture ({describe(config)}); "
                                       "the configuration and the weights do not match")
    for key, shape in expected.items():
        if key not in model:
            raise fail(f"model.{key}", f"is missing: the stored architecture ({describe(config)}) needs "
                                       f"{len(expected)} tensors and the file holds {len(model)}")
        value = model[key]
        if is_integer(key):
            info = array_info(value)
            if info is None or info[1] not in "iu" or tuple(info[0]) != shape:
                raise fail(f"model.{key}", "must be an integer scalar")
        else:
            _float_array(fail, f"model.{key}", value, shape)
    return model


# -- the resume state -------------------------------------------------------------------------------
def _optimizer(fail, opt, config: ModelConfig) -> None:
    where = "train_state.optimizer"
    params = parameter_shapes(config)
    if not isinstance(opt, dict) or set(opt) != {"state", "param_groups"}:
        raise fail(where, "must be a table with 'state' and 'param_groups'")
    groups = opt["param_groups"]
    if not isinstance(groups, list) or len(groups) != OPTIMIZER_GROUPS:
        raise fail(f"{where}.param_groups", f"must be a list of {OPTIMIZER_GROUPS} group (the model's)")
    covered: list = []
    for g, group in enumerate(groups):
        at = f"{where}.param_groups[{g}]"
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise fail(at, "must be a table with a 'params' list")
        for key, value in group.items():
            _check_group_value(fail, f"{at}.{key}", key, value)
        covered += group["params"]
    if covered != list(range(len(params))):
        raise fail(f"{where}.param_groups", f"do not cover the model's {len(params)} parameters in order")
    state = opt["state"]
    if not isinstance(state, dict):
        raise fail(f"{where}.state", "must be a table")
    for index, entry in state.items():
        at = f"{where}.state[{index!r:.20}]"
        if not _is_int(index) or not 0 <= index < len(params):
            raise fail(at, f"names no parameter of the model (it has {len(params)})")
        if not isinstance(entry, dict):
            raise fail(at, "must be a table")
        name, shape = params[index]
        for key, value in entry.items():
            if key == "step":
                _float_array(fail, f"{at}.step", value, ())
                if float(value) < 0:
                    raise fail(f"{at}.step", "must not be negative")
            elif key in ADAM_STATE:
                _float_array(fail, f"{at}.{key}", value, shape)
            else:
                raise fail(f"{at}.{key!r:.40}", "is not part of Adam's state")


def _check_group_value(fail, where: str, key, value) -> None:
    if key == "params":
        if not all(_is_int(p) for p in value):
            raise fail(where, "must list parameter numbers")
    elif key in ("lr", "initial_lr"):
        if not (_is_number(value) and value > 0):
            raise fail(where, "must be a positive number")
    elif key in ("eps", "weight_decay"):
        if not (_is_number(value) and value >= 0):
            raise fail(where, "must be a number >= 0")
    elif key == "betas":
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_number(b) and 0 <= b < 1 for b in value)):
            raise fail(where, "must be two numbers in [0, 1)")
    elif key in ADAM_FLAGS:
        if not isinstance(value, bool):
            raise fail(where, "must be true or false")
    elif key in ("foreach", "fused"):
        if value is not None and not isinstance(value, bool):
            raise fail(where, "must be true, false or none")
    elif not isinstance(key, str) or not (value is None or isinstance(value, (bool, str)) or _is_number(value)):
        raise fail(where, "is not a plain option")


def _hidden_state(fail, state, config: ModelConfig) -> None:
    where = "train_state.state"
    if state is None:
        return
    count = 2 if config.model_type == "lstm" else 1
    if not isinstance(state, (list, tuple)) or len(state) != count:
        raise fail(where, f"must be a list of {count} tensor(s) for an {config.model_type}")
    rows = None
    for k, t in enumerate(state):
        info = array_info(t)
        if info is None or info[1] != "f" or len(info[0]) != 3:
            raise fail(f"{where}[{k}]", "must be a 3-D floating-point tensor")
        L, N, H = info[0]
        rows = N if rows is None else rows
        if (L, H) != (config.num_layers, config.rnn_size) or N != rows or not 1 <= N <= MAX_STREAMS:
            raise fail(f"{where}[{k}]", f"has shape {tuple(info[0])}, which does not fit {config.num_layers} "
                                        f"layers of {config.rnn_size} units")
        _float_array(fail, f"{where}[{k}]", t)


def _rng(fail, where: str, value, optional: bool) -> None:
    if value is None and optional:
        return
    info = array_info(value)
    if info is None or info[1] != "u" or len(info[0]) != 1 or not 1 <= info[0][0] <= 1 << 20:
        raise fail(where, "must be a random-generator state (a 1-D byte tensor)")
    if isinstance(value, np.ndarray) and value.dtype != np.uint8:
        raise fail(where, "must be a random-generator state (a 1-D byte tensor)")


def _history(fail, history) -> None:
    where = "train_state.history"
    if not isinstance(history, dict):
        raise fail(where, "must be a table of lists")
    for key, value in history.items():
        at = f"{where}.{key!r:.40}"
        if not isinstance(key, str):
            raise fail(at, "is not a named history")
        if isinstance(value, dict) != (key == "update_ratio_history"):  # the one table of lists
            raise fail(at, "must be a table of lists" if key == "update_ratio_history" else "must be a list")
        series = value.values() if isinstance(value, dict) else [value]
        if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
            raise fail(at, "must map layer names to lists")
        for s in series:
            if not isinstance(s, list) or not all(x is None or _is_number(x) or isinstance(x, float) for x in s):
                raise fail(at, "must be a list of numbers")


def _options(fail, config) -> None:
    where = "train_state.config"
    if not isinstance(config, dict):
        raise fail(where, "must be a table of options")
    for key, value in config.items():
        if not isinstance(key, str):
            raise fail(where, "has an option that is not named by a string")
        if not (value is None or isinstance(value, bool) or _is_number(value)
                or (isinstance(value, str) and len(value) <= 4096)):
            raise fail(f"{where}.{key:.40}", "must be a plain option value (number, string, true/false or none)")


RESUME_FIELDS = ("optimizer", "learning_rate", "rng_cpu", "history", "config")  # what --resume needs


def _train_state(fail, ts, config: ModelConfig) -> dict:
    if ts is None or ts == {}:
        return {}
    if not isinstance(ts, dict):
        raise fail("train_state", "must be a table")
    for key in RESUME_FIELDS:
        if key not in ts:
            raise fail(f"train_state.{key}", "is missing")
    for key, value in ts.items():
        where = f"train_state.{key!r:.40}" if not isinstance(key, str) else f"train_state.{key:.40}"
        if key == "optimizer":
            _optimizer(fail, value, config)
        elif key == "learning_rate":
            if not (_is_number(value) and value > 0):
                raise fail(where, "must be a positive number")
        elif key == "state":
            _hidden_state(fail, value, config)
        elif key in ("rng_cpu", "rng_cuda"):
            _rng(fail, where, value, optional=key == "rng_cuda")
        elif key == "history":
            _history(fail, value)
        elif key == "config":
            _options(fail, value)
        else:
            check_plain(fail, where, value, arrays=True)
    return ts


def validate_payload(path: str | Path, data: object) -> Payload:
    """Check a payload's format, version, architecture, weights, vocabulary and resume state."""
    path = Path(path)
    fail = _Fail(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CorruptFile(path, "not a charrnn checkpoint")
    version = data.get("version")
    if not _is_int(version) or version < 1:
        raise fail("version", "must be a whole number >= 1")
    if version > VERSION:
        raise CorruptFile(path, f"checkpoint format version {version} is newer than this charrnn understands "
                                f"(version {VERSION}); upgrade charrnn")
    config = _model_config(fail, data.get("model_config"))
    vocab = _vocab(fail, data.get("vocab"), config)
    weights = _weights(fail, data.get("model"), config)
    iteration = data.get("iteration", 0)
    if not (_is_int(iteration) and 0 <= iteration < 2 ** 53):
        raise fail("iteration", "must be a whole number >= 0")
    train_state = _train_state(fail, data.get("train_state"), config)
    info = data.get("info") or {}
    if not isinstance(info, dict):
        raise fail("info", "must be a table")
    check_plain(fail, "info", info)
    return Payload(config, vocab, weights, int(iteration), train_state, info)


def _type_ok(value, annotation: str) -> bool:
    for name in (t.strip() for t in annotation.split("|")):
        if (name == "None" and value is None) or (name == "bool" and isinstance(value, bool)) \
                or (name == "int" and _is_int(value) and abs(value) < MAX_INT) \
                or (name == "float" and _is_number(value)) or (name == "str" and isinstance(value, str)):
            return True
    return False


def check_options(path: str | Path, values: dict, cls) -> dict:
    """The stored options ``values`` that are fields of the dataclass ``cls``, each of its declared type.

    Unknown options are dropped (an older or newer charrnn may have written them); a known one
    of the wrong type is a :class:`CorruptFile` naming it.
    """
    fail = _Fail(Path(path))
    if not isinstance(values, dict):
        raise fail("train_state.config", "must be a table of options")
    known = {f.name: str(f.type) for f in fields(cls)}
    out = {}
    for key, value in values.items():
        if key in known:
            if not _type_ok(value, known[key]):
                raise fail(f"train_state.config.{key}", f"must be of type {known[key]} (found {value!r:.40})")
            out[key] = value
    return out
