"""Reading torch-rnn HDF5 files and cutting a split into minibatches (torch-rnn's DataLoader).

Each split of ``num`` tokens becomes ``N`` contiguous streams: batch ``k + 1`` continues
exactly where batch ``k`` stopped in every row, so the hidden state can be carried from one
minibatch to the next (truncated backpropagation through time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CharRNNError
from .fileio import check_readable_file
from .vocab import Vocabulary

SPLITS = ("train", "val", "test")


def split_sizes(h5_path: str | Path, splits=SPLITS) -> dict[str, int]:
    """Check that the named splits are 1-D integer datasets; return their lengths."""
    import h5py

    path = check_readable_file(h5_path, "HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            sizes = {}
            for name in splits:
                if name not in f:
                    raise CharRNNError(f"{path}: no '/{name}' dataset (is this a file from charrnn or torch-rnn preprocess?)")
                ds = f[name]
                if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind not in "ui":
                    raise CharRNNError(f"{path}: '/{name}' must be a 1-D integer dataset (found {getattr(ds, 'dtype', 'a group')})")
                sizes[name] = len(ds)
            return sizes
    except CharRNNError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise CharRNNError(f"{path}: cannot read HDF5 file ({str(exc).splitlines()[0]}); is it truncated or corrupt?") from None


def load_splits(h5_path: str | Path, vocab: Vocabulary, splits=SPLITS) -> dict[str, np.ndarray]:
    """Read and validate the named splits of a torch-rnn HDF5 file against ``vocab``."""
    import h5py

    split_sizes(h5_path, splits)
    path = Path(h5_path)
    try:
        with h5py.File(path, "r") as f:
            out = {name: f[name][()] for name in splits}
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise CharRNNError(f"{path}: cannot read HDF5 file ({str(exc).splitlines()[0]}); is it truncated or corrupt?") from None
    for name, ids in out.items():
        if len(ids) and (int(ids.min()) < 1 or int(ids.max()) > len(vocab)):
            raise CharRNNError(
                f"{path}: '/{name}' holds token ids outside 1..{len(vocab)} of the vocabulary; "
                "the HDF5 and JSON files do not belong together")
    return out


@dataclass
class StreamBatches:
    """The minibatches of one split: ``inputs`` and ``targets`` of shape (batches, N, T).

    Ids here count from 0 (the file's id minus one), as PyTorch's embedding expects.
    """

    inputs: np.ndarray
    targets: np.ndarray

    @property
    def num_batches(self) -> int:
        return self.inputs.shape[0]

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inputs[k], self.targets[k]

    def share(self, rows: slice) -> "StreamBatches":
        """A share of the streams (one rank's, in distributed training)."""
        return StreamBatches(np.ascontiguousarray(self.inputs[:, rows]), np.ascontiguousarray(self.targets[:, rows]))

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[1]


def make_batches(ids: np.ndarray, batch_size: int, seq_length: int, split: str = "train",
                 log=None) -> StreamBatches | None:
    """Cut a split into contiguous streams, as torch-rnn's DataLoader does.

    If ``batch_size * seq_length > num - 1`` the batch size is reduced to
    ``(num - 1) // seq_length`` for that split (with a message). Returns None when the split
    cannot hold even one sequence.
    """
    num = len(ids)
    n, t = batch_size, seq_length
    if n * t > num - 1:
        n = (num - 1) // t
        if n < 1:
            return None
        if log:
            log(f"{split} split: {num:,} tokens are too few for batch size {batch_size}; using {n}")
    extra = num % (n * t) or n * t
    usable = num - extra
    ids = np.asarray(ids, dtype=np.int64) - 1  # torch-rnn counts tokens from 1, PyTorch from 0
    x = ids[:usable].reshape(n, -1, t).transpose(1, 0, 2)
    y = ids[1:usable + 1].reshape(n, -1, t).transpose(1, 0, 2)
    return StreamBatches(np.ascontiguousarray(x), np.ascontiguousarray(y))


def batch_geometry(num: int, batch_size: int, seq_length: int) -> tuple[int, int] | None:
    """(N, number of batches) for a split of ``num`` tokens, with torch-rnn's reduction; None if too short."""
    n, t = batch_size, seq_length
    if n * t > num - 1:
        n = (num - 1) // t
        if n < 1:
            return None
    extra = num % (n * t) or n * t
    return n, (num - extra) // (n * t)


class LazyStreams:
    """The minibatches of a split read from the HDF5 file a window at a time.

    Same layout as :func:`make_batches` (row ``r`` of batch ``k`` holds tokens
    ``r * L + k * T ... + T`` of the split, where ``L`` is the row length), but only a window
    of ``window`` batches is in memory, so memory does not grow with the corpus.
    """

    def __init__(self, h5_path: str | Path, split: str, vocab_size: int, batch_size: int, seq_length: int,
                 window: int = 256, log=None) -> None:
        import h5py

        self.path, self.split, self.vocab_size, self.T = Path(h5_path), split, vocab_size, seq_length
        with h5py.File(self.path, "r") as f:
            num = len(f[split])
        geometry = batch_geometry(num, batch_size, seq_length)
        if geometry is None:
            raise CharRNNError(f"the {split} split has only {num:,} tokens: too few for one sequence of {seq_length}")
        self.N, self.num_batches = geometry
        if self.N != batch_size and log:
            log(f"{split} split: {num:,} tokens are too few for batch size {batch_size}; using {self.N}")
        self.row_length = self.num_batches * seq_length
        self.rows = range(self.N)
        self.window = max(1, window)
        self._start, self._x, self._y = -1, None, None
        self._file = None

    @property
    def batch_size(self) -> int:
        return len(self.rows)

    def share(self, rows: slice) -> "LazyStreams":
        """Keep only a share of the streams (one rank's, in distributed training)."""
        self.rows = range(self.N)[rows]
        self._start, self._x, self._y = -1, None, None
        return self

    def _load(self, start: int) -> None:
        import h5py

        if self._file is None:
            self._file = h5py.File(self.path, "r")
        ds = self._file[self.split]
        count = min(self.window, self.num_batches - start)
        span = count * self.T
        block = np.empty((len(self.rows), span + 1), dtype=np.int64)
        for j, r in enumerate(self.rows):
            begin = r * self.row_length + start * self.T
            block[j] = ds[begin:begin + span + 1]
        if block.size and (block.min() < 1 or block.max() > self.vocab_size):
            raise CharRNNError(f"{self.path}: '/{self.split}' holds token ids outside 1..{self.vocab_size}; "
                               "the HDF5 and JSON files do not belong together")
        block -= 1
        self._x = block[:, :span].reshape(len(self.rows), count, self.T).transpose(1, 0, 2)
        self._y = block[:, 1:].reshape(len(self.rows), count, self.T).transpose(1, 0, 2)
        self._start = start

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (N, T) of batch ``k``, 0-based ids."""
        if not self._start <= k < self._start + self.window or self._x is None:
            self._load(k - k % self.window)
        j = k - self._start
        return np.ascontiguousarray(self._x[j]), np.ascontiguousarray(self._y[j])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
