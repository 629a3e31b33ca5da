"""The resume state of a checkpoint (``train_state``), validated field by field before ``--resume`` uses it.

The optimizer against the model's parameters (:mod:`charrnn.layout`), the random-generator
state, the carried hidden state, the histories and the stored options; each problem names
its field.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..layout import parameter_shapes, state_count
from .values import MAX_INT, Fail, array_info, check_plain, float_array, is_int, is_number

MAX_HISTORY = 20_000_000  # numbers in the resume histories, counting every reference
MAX_STREAMS = 1 << 20  # rows of a carried hidden state
OPTIMIZER_GROUPS = 1  # charrnn's Adam has one group over all parameters, in model.parameters() order
ADAM_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay")
ADAM_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
ADAM_GROUP_REQUIRED = ("lr", "betas", "eps", "weight_decay")  # torch fills in the flags, not these
ADAM_STATE_REQUIRED = ("step", "exp_avg", "exp_avg_sq")  # per parameter, once it has taken a step


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
        for key in ADAM_GROUP_REQUIRED:
            if key not in group:
                raise fail(f"{at}.{key}", "is missing")
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
        if not is_int(index) or not 0 <= index < len(params):
            raise fail(at, f"names no parameter of the model (it has {len(params)})")
        if not isinstance(entry, dict):
            raise fail(at, "must be a table")
        name, shape = params[index]
        for key in ADAM_STATE_REQUIRED:
            if key not in entry:
                raise fail(f"{at}.{key}", "is missing")
        for key, value in entry.items():
            if key == "step":
                float_array(fail, f"{at}.step", value, ())
                if float(value) < 0:
                    raise fail(f"{at}.step", "must not be negative")
            elif key in ADAM_STATE:
                float_array(fail, f"{at}.{key}", value, shape)
            else:
                raise fail(f"{at}.{key!r:.40}", "is not part of Adam's state")


def _check_group_value(fail, where: str, key, value) -> None:
    if key == "params":
        if not all(is_int(p) for p in value):
            raise fail(where, "must list parameter numbers")
    elif key in ("lr", "initial_lr"):  # a schedule may end at exactly 0 (cosine with --min-lr 0)
        if not (is_number(value) and value >= 0):
            raise fail(where, "must be a number >= 0")
    elif key in ("eps", "weight_decay"):
        if not (is_number(value) and value >= 0):
            raise fail(where, "must be a number >= 0")
    elif key == "betas":
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(is_number(b) and 0 <= b < 1 for b in value)):
            raise fail(where, "must be two numbers in [0, 1)")
    elif key in ADAM_FLAGS:
        if not isinstance(value, bool):
            raise fail(where, "must be true or false")
    elif key in ("foreach", "fused"):
        if value is not None and not isinstance(value, bool):
            raise fail(where, "must be true, false or none")
    elif not isinstance(key, str) or not (value is None or isinstance(value, (bool, str)) or is_number(value)):
        raise fail(where, "is not a plain option")


def _hidden_state(fail, state, config: ModelConfig) -> None:
    where = "train_state.state"
    if state is None:
        return
    count = state_count(config.model_type)
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
        float_array(fail, f"{where}[{k}]", t)


CUDA_RNG_BYTES = (8, 16)  # what CUDA's generator accepts: the seed, then (newer torch) the philox offset


def _rng(fail, where: str, value, optional: bool) -> None:
    if value is None and optional:
        return
    info = array_info(value)
    if info is None or info[1] != "u" or len(info[0]) != 1 or not 1 <= info[0][0] <= 1 << 20:
        raise fail(where, "must be a random-generator state (a 1-D byte tensor)")
    if isinstance(value, np.ndarray) and value.dtype != np.uint8:
        raise fail(where, "must be a random-generator state (a 1-D byte tensor)")
    if where.endswith("rng_cuda") and info[0][0] not in CUDA_RNG_BYTES:
        raise fail(where, f"must be a CUDA generator state of 8 or 16 bytes (found {info[0][0]})")


SCALER_KEYS = {"scale": float, "growth_factor": float, "backoff_factor": float, "growth_interval": int,
               "_growth_tracker": int}


def _scaler(fail, value) -> None:
    """fp16's GradScaler state: its five numbers, each in range."""
    where = "train_state.scaler"
    if not isinstance(value, dict) or set(value) != set(SCALER_KEYS):
        raise fail(where, f"must be a loss scaler's state ({', '.join(SCALER_KEYS)})")
    for key, kind in SCALER_KEYS.items():
        v = value[key]
        ok = is_int(v) and 0 <= v < MAX_INT if kind is int else is_number(v) and 0 < float(v) < float("inf")
        if not ok or isinstance(v, bool):
            raise fail(f"{where}.{key}", "must be a positive number" if kind is float else "must be a whole number >= 0")


def _history(fail, history) -> None:
    where = "train_state.history"
    if not isinstance(history, dict) or len(history) > 256:
        raise fail(where, "must be a table of lists")
    total, checked = 0, set()
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
            total += len(s) if isinstance(s, list) else 0
            if total > MAX_HISTORY:
                raise fail(where, f"holds more than {MAX_HISTORY:,} values")
            if id(s) in checked:
                continue
            if not isinstance(s, list) or not all(x is None or is_number(x) or isinstance(x, float) for x in s):
                raise fail(at, "must be a list of numbers")
            checked.add(id(s))


def _options(fail, config) -> None:
    where = "train_state.config"
    if not isinstance(config, dict):
        raise fail(where, "must be a table of options")
    for key, value in config.items():
        if not isinstance(key, str):
            raise fail(where, "has an option that is not named by a string")
        if not (value is None or isinstance(value, bool) or is_number(value)
                or (isinstance(value, str) and len(value) <= 4096)):
            raise fail(f"{where}.{key:.40}", "must be a plain option value (number, string, true/false or none)")


RESUME_FIELDS = ("optimizer", "learning_rate", "rng_cpu", "history", "config")  # what --resume needs


def validate_train_state(fail, ts, config: ModelConfig) -> dict:
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
            if not (is_number(value) and value >= 0):
                raise fail(where, "must be a number >= 0")
        elif key == "state":
            _hidden_state(fail, value, config)
        elif key in ("rng_cpu", "rng_cuda", "rng_mps"):
            _rng(fail, where, value, optional=key != "rng_cpu")
        elif key == "scaler":
            _scaler(fail, value)
        elif key == "history":
            _history(fail, value)
        elif key == "config":
            _options(fail, value)
        else:
            check_plain(fail, where, value, arrays=True)
    return ts


def _type_ok(value, annotation: str) -> bool:
    for name in (t.strip() for t in annotation.split("|")):
        if (name == "None" and value is None) or (name == "bool" and isinstance(value, bool)) \
                or (name == "int" and is_int(value) and abs(value) < MAX_INT) \
                or (name == "float" and is_number(value)) or (name == "str" and isinstance(value, str)):
            return True
    return False


def check_options(path: str | Path, values: dict, cls) -> dict:
    """The stored options ``values`` that are fields of the dataclass ``cls``, each of its declared type.

    Unknown options are dropped (an older or newer charrnn may have written them); a known one
    of the wrong type is a :class:`CorruptFile` naming it.
    """
    fail = Fail(Path(path))
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
