"""How an option is defined once: its default, help, range and choices, for the CLI and the validation alike.

Each command's options are a dataclass of :func:`option` fields (:mod:`charrnn.training.options`,
:mod:`charrnn.sampling.options`, :mod:`charrnn.serve.options`, :mod:`charrnn.eval_options`); the
command line builds its flags from them (``cli.options_of``), :func:`check_fields` checks them.
No torch here.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .errors import InvalidInput


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: ``low`` .. ``high``, each end open or closed (None = unbounded)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return False
        return self.high is None or (value < self.high or not self.high_open and value == self.high)

    def problem(self, value) -> str:
        if self == POSITIVE:
            return f"must be positive (got {value})"
        if self == NON_NEGATIVE:
            return f"must not be negative (got {value})"
        if self.high is None:
            return f"must be {'more than' if self.low_open else 'at least'} {_number(self.low)} (got {value})"
        return (f"must lie in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.high_open else ']'} (got {value})")


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)


def option(default: Any, help: str = "", *, range: Range | None = None, choices: tuple | None = None,
           kind: str | None = None, cli: bool = True, flag: str | None = None, short: str | None = None) -> Any:
    """A config field with what the command line and the validation need to know about it.

    ``kind``: how the flag is spelled on the command line: "path", "dir", "file", "duration" (30s, 5m, 2h),
    "01" (a 0/1 value, as torch-rnn wrote booleans), "flag" (present or absent) or "multiple" (repeatable,
    a tuple of strings). ``flag``: the long flag when it is not the field's name; ``short``: e.g. "-o".
    ``cli=False``: a Python-only option.
    """
    return field(default=default, metadata={"help": help, "range": range, "choices": choices, "kind": kind,
                                            "cli": cli, "flag": flag, "short": short})


GPU_HELP = "GPU index: -1 = CPU; default: GPU 0 when present, else the CPU."


_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false (1 or 0)"}


def _base_type(f) -> str:
    return str(f.type).replace(" | None", "").strip()


def check_fields(config) -> None:
    """Check every field of a config dataclass against its type, range and choices."""
    for f in fields(config):
        value, base = getattr(config, f.name), _base_type(f)
        if value is None and "None" in str(f.type):
            continue
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool),
              "str": isinstance(value, str), "bool": isinstance(value, bool)}.get(base, True)
        if not ok:
            raise InvalidInput(f.name, f"must be {_TYPE_NAMES[base]} (got {value!r})")
        meta = f.metadata
        if base == "float" and not math.isfinite(value):
            raise InvalidInput(f.name, f"must be finite (got {value})")
        if meta.get("range") and value not in meta["range"]:
            raise InvalidInput(f.name, meta["range"].problem(value))
        if meta.get("choices") and value not in meta["choices"]:
            raise InvalidInput(f.name, f"must be one of {', '.join(meta['choices'])} (got {value!r})")


def defaults(cls) -> dict[str, Any]:
    """Each field's default value."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}
