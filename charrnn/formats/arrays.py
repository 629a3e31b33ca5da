"""Safe array reading: tensor views of untrusted storages, copied only when bounded and in bounds.

A file describes a tensor as (storage, offset, size, stride). Every number comes from the file,
so before anything is allocated the view must lie inside its storage, hold no more elements
than the storage (no stride-0 "broadcast" that turns 4 bytes into gigabytes), and fit the
reader's byte budget (about the file's own size).
"""

from __future__ import annotations

import math

import numpy as np

MAX_RANK = 16


class FormatError(ValueError):
    """A malformed structure inside a file; readers turn it into :class:`charrnn.errors.CorruptFile`."""


class Budget:
    """The bytes a reader may still allocate for one file: refuse rather than exhaust memory."""

    def __init__(self, limit: int) -> None:
        self.left = int(limit)

    def take(self, nbytes: int, what: str = "tensor data") -> None:
        if nbytes > self.left:
            raise FormatError(f"{what} larger than the file can hold (a size field is corrupt or hostile)")
        self.left -= nbytes


def _ints(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or len(values) > MAX_RANK:
        raise FormatError(f"malformed tensor {what}")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in values):
        raise FormatError(f"malformed tensor {what}")
    return tuple(values)


def strided_copy(storage: np.ndarray, offset: int, size, stride, budget: Budget | None = None) -> np.ndarray:
    """A copy of the view (offset, size, stride) of a 1-D storage, bounds-checked and bounded.

    Raises :class:`FormatError` when the view is malformed, reaches outside the storage, holds
    more elements than the storage, or exceeds ``budget``; NumPy never reads memory it does not own.
    """
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if not isinstance(offset, int) or isinstance(offset, bool) or len(size) != len(stride):
        raise FormatError("malformed tensor")
    if any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise FormatError("malformed tensor (negative size or stride)")
    numel = math.prod(size)
    if numel == 0:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or last >= len(storage):
        raise FormatError("tensor reaches outside its storage")
    if numel > len(storage):
        raise FormatError("tensor has more elements than its storage")
    if budget is not None:
        budget.take(numel * storage.itemsize)
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[s * storage.itemsize for s in stride], writeable=False)
    return np.array(view)
