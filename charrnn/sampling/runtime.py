"""What the engine and its compiled backend share without importing each other: one-time notices, tiling."""

from __future__ import annotations

import sys

PARALLEL_MIN_ROWS = 16  # rows from which the compiled kernels spread tiles over threads
_SAID: set = set()  # what was already said once on stderr in this process


def say_once(message: str) -> None:
    """One line on stderr, once per process (the fallback to NumPy, a compile wait)."""
    if message not in _SAID:
        _SAID.add(message)
        print(f"charrnn: {message}", file=sys.stderr, flush=True)
