"""Checks for plain values read from untrusted files: numbers, arrays (NumPy or torch), JSON-like trees.

Every failure is a :class:`CorruptFile` that names the field (``fail(where, problem)``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from ..errors import CorruptFile

MAX_DEPTH = 32  # nesting of plain values (options, histories)
MAX_VALUES = 2_000_000  # plain values in options and imported histories, counting every reference
MAX_INT = 2 ** 63
MAX_STRING = 1 << 16


class Fail:
    """Makes the error for a field: ``fail("model.embed.weight", "is missing")``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, where: str, problem: str) -> CorruptFile:
        return CorruptFile(self.path, f"damaged checkpoint: '{where}' {problem}")


def is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_number(x) -> bool:
    return (is_int(x) and abs(int(x)) < MAX_INT) or (isinstance(x, (float, np.floating)) and math.isfinite(x))


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


def float_array(fail, where: str, x, shape: tuple | None = None, finite: bool = True):
    info = array_info(x)
    if info is None or info[1] != "f":
        raise fail(where, "must be a floating-point tensor")
    if shape is not None and tuple(info[0]) != tuple(shape):
        raise fail(where, f"has shape {tuple(info[0])}, expected {tuple(shape)}")
    if finite and not _all_finite(x):
        raise fail(where, "holds non-finite values")
    return x


def check_plain(fail, where: str, value, arrays: bool = False) -> None:
    """Refuse anything but JSON-like values: bounded depth and count, no cycles, sane numbers and strings.

    The count matters because a file can refer to one table many times: 30 levels of pairs
    of references would otherwise be a billion values to check (and to write as JSON).
    """
    count, ancestors, sizes = [0], set(), {}  # sizes: id -> values under a container already checked

    def name(trail) -> str:
        keys = []
        while trail:
            trail, key = trail
            keys.append(f"[{key}]" if isinstance(key, int) else f".{key}")
        return where + "".join(reversed(keys))

    def visit(v, trail, depth: int) -> None:
        count[0] += 1
        if count[0] > MAX_VALUES:
            raise fail(name(trail), f"holds more than {MAX_VALUES:,} values")
        t = type(v)
        if v is None or t is bool or t is float or (t is int and -MAX_INT < v < MAX_INT):
            return
        if t is str:
            if len(v) > MAX_STRING:
                raise fail(name(trail), "holds an over-long string")
            return
        if is_number(v) or isinstance(v, (float, np.floating)) or (arrays and array_info(v) is not None):
            return
        if not isinstance(v, (list, tuple, dict)):
            problem = "holds an implausibly large number" if is_int(v) else f"holds a value of type {t.__name__}"
            raise fail(name(trail), problem)
        if depth >= MAX_DEPTH:
            raise fail(name(trail), "is nested too deeply")
        if id(v) in ancestors:
            raise fail(name(trail), "contains a reference cycle")
        if id(v) in sizes:  # referred to again: count its values again, check them once
            count[0] += sizes[id(v)]
            if count[0] > MAX_VALUES:
                raise fail(name(trail), f"holds more than {MAX_VALUES:,} values")
            return
        before = count[0]
        if t is list and all(type(x) is float for x in v):  # a history: the common case, checked at once
            count[0] += len(v)
            sizes[id(v)] = len(v)
            return
        ancestors.add(id(v))
        if isinstance(v, dict):
            for key, item in v.items():
                if not (key is None or isinstance(key, (str, bool)) or is_number(key)):
                    raise fail(name(trail), f"has a key of type {type(key).__name__}")
                visit(item, (trail, key), depth + 1)
        else:
            for k, item in enumerate(v):
                visit(item, (trail, k), depth + 1)
        ancestors.discard(id(v))
        sizes[id(v)] = count[0] - before

    visit(value, None, 0)
