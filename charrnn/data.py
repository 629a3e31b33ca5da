"""torch-rnn HDF5 token files, and the minibatches of a split (torch-rnn's DataLoader).

Each split of ``num`` tokens becomes ``N`` contiguous streams: batch ``k + 1`` continues
exactly where batch ``k`` stopped in every row, so the hidden state can be carried from one
minibatch to the next (truncated backpropagation through time).

Every batch source follows one protocol, :class:`BatchSource`:

* ``num_batches``, ``batch_size`` (rows N), ``seq_length`` (T): the geometry;
* ``batch(k)`` -> ``(inputs, targets)``, each an int64 array (N, T) of **0-based** ids;
* ``share(rows)`` -> a **new** source holding only those rows (one rank's share in
  distributed training); the original is left untouched;
* ``close()`` releases any open file (also on ``with source: ...``); closing twice is fine.

:class:`InMemoryBatches` holds a split whole (small corpora, copied to the device once);
:class:`StreamedBatches` reads a window of batches at a time from the file, so memory does
not grow with the corpus. :func:`open_batches` picks one. The file's 1-based ids become the
model's 0-based ids in :func:`charrnn.vocab.to_model_ids`, nowhere else.

HDF5 files are untrusted input: a split must be a plain 1-D integer dataset stored in this
file (no external or virtual storage, no unallocated "sparse" extent), it is read in chunks of
at most :data:`CHUNK_TOKENS`, and every chunk's ids are checked against the vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from .errors import CharRNNError, CorruptFile
from .fileio import check_readable_file
from .vocab import Vocabulary, to_model_ids

SPLITS = ("train", "val", "test")
CHUNK_TOKENS = 1 << 20  # the most tokens read from an HDF5 file at once
STREAM_TOKENS = 8_000_000  # splits longer than this are streamed, not loaded whole
MAX_COMPRESSION = 1100  # deflate cannot shrink data more than about 1032:1; more means unwritten chunks


@runtime_checkable
class BatchSource(Protocol):
    """The minibatches of one split; see the module docstring."""

    num_batches: int
    batch_size: int
    seq_length: int

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def share(self, rows: slice) -> "BatchSource": ...

    def close(self) -> None: ...


# -- HDF5 files ----------------------------------------------------------------------------------
def _read_error(path: Path, exc: Exception) -> CorruptFile:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return CorruptFile(path, f"cannot read HDF5 file ({reason}); is it truncated or corrupt?")


def _checked_dataset(f, path: Path, name: str):
    """The split ``name`` of an open file, after checking it is safe and plain to read."""
    import h5py

    if name not in f:
        raise CorruptFile(path, f"no '/{name}' dataset (is this a file from charrnn or torch-rnn preprocess?)")
    ds = f[name]
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind not in "ui" or ds.dtype.itemsize > 8:
        raise CorruptFile(path, f"'/{name}' must be a 1-D integer dataset (found {getattr(ds, 'dtype', 'a group')})")
    if ds.is_virtual or ds.external:
        raise CorruptFile(path, f"'/{name}' refers to data in other files (external or virtual storage)")
    filtered = bool(ds.compression or ds.id.get_create_plist().get_nfilters())
    stored = ds.id.get_storage_size()
    if stored * (MAX_COMPRESSION if filtered else 1) < ds.size * ds.dtype.itemsize:
        raise CorruptFile(path, f"'/{name}' declares {ds.size:,} tokens but stores only {stored:,} bytes "
                                "(a sparse or truncated dataset)")
    return ds


def _check_ids(ids: np.ndarray, vocab_size: int, path: Path, split: str) -> None:
    if ids.size and (int(ids.min()) < 1 or int(ids.max()) > vocab_size):
        raise CorruptFile(path, f"'/{split}' holds token ids outside 1..{vocab_size} of the vocabulary; "
                                "the HDF5 and JSON files do not belong together")


def _open(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise _read_error(path, exc) from None


def split_sizes(h5_path: str | Path, splits=SPLITS) -> dict[str, int]:
    """Check that the named splits are plain 1-D integer datasets; return their lengths."""
    path = check_readable_file(h5_path, "HDF5 file")
    with _open(path) as f:
        try:
            return {name: len(_checked_dataset(f, path, name)) for name in splits}
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise _read_error(path, exc) from None


def read_chunks(h5_path: str | Path, split: str, vocab_size: int, start: int = 0,
                stop: int | None = None) -> Iterator[np.ndarray]:
    """Tokens ``start:stop`` of a split (file ids, from 1), in checked chunks of at most CHUNK_TOKENS."""
    path = Path(h5_path)
    with _open(path) as f:
        try:
            ds = _checked_dataset(f, path, split)
            stop = len(ds) if stop is None else min(stop, len(ds))
            for begin in range(start, stop, CHUNK_TOKENS):
                chunk = ds[begin:min(stop, begin + CHUNK_TOKENS)]
                _check_ids(chunk, vocab_size, path, split)
                yield chunk
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise _read_error(path, exc) from None


def load_splits(h5_path: str | Path, vocab: Vocabulary, splits=SPLITS) -> dict[str, np.ndarray]:
    """Read and validate the named splits of a torch-rnn HDF5 file against ``vocab`` (file ids)."""
    sizes = split_sizes(h5_path, splits)
    out = {}
    for name in splits:
        ids, at = None, 0
        for chunk in read_chunks(h5_path, name, len(vocab)):
            if ids is None:
                ids = np.empty(sizes[name], dtype=chunk.dtype)
            ids[at:at + len(chunk)] = chunk
            at += len(chunk)
        out[name] = ids if ids is not None else np.zeros(0, dtype=np.uint8)
    return out


# -- batch geometry ---------------------------------------------------------------------------------
def batch_geometry(num: int, batch_size: int, seq_length: int) -> tuple[int, int] | None:
    """(N, number of batches) for a split of ``num`` tokens, with torch-rnn's reduction; None if too short.

    If ``batch_size * seq_length > num - 1`` the batch size is reduced to ``(num - 1) // seq_length``.
    """
    n, t = batch_size, seq_length
    if n * t > num - 1:
        n = (num - 1) // t
        if n < 1:
            return None
    extra = num % (n * t) or n * t
    return n, (num - extra) // (n * t)


def _reduced(split: str, num: int, asked: int, got: int, log) -> None:
    if got != asked and log:
        log(f"{split} split: {num:,} tokens are too few for batch size {asked}; using {got}")


class _Source:
    """What both batch sources share: context management."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InMemoryBatches(_Source):
    """The minibatches of one split, whole: ``inputs`` and ``targets`` of shape (batches, N, T), 0-based."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        self.inputs, self.targets = inputs, targets
        self.num_batches, self.batch_size, self.seq_length = inputs.shape

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inputs[k], self.targets[k]

    def share(self, rows: slice) -> "InMemoryBatches":
        return InMemoryBatches(np.ascontiguousarray(self.inputs[:, rows]), np.ascontiguousarray(self.targets[:, rows]))




def make_batches(ids: np.ndarray, batch_size: int, seq_length: int, split: str = "train",
                 log=None) -> InMemoryBatches | None:
    """Cut a split (file ids, from 1) into contiguous streams, as torch-rnn's DataLoader does.

    Returns None when the split cannot hold even one sequence.
    """
    geometry = batch_geometry(len(ids), batch_size, seq_length)
    if geometry is None:
        return None
    n, count = geometry
    _reduced(split, len(ids), batch_size, n, log)
    usable, t = n * count * seq_length, seq_length
    ids = to_model_ids(ids[:usable + 1])
    x = ids[:usable].reshape(n, -1, t).transpose(1, 0, 2)
    y = ids[1:usable + 1].reshape(n, -1, t).transpose(1, 0, 2)
    return InMemoryBatches(np.ascontiguousarray(x), np.ascontiguousarray(y))


class StreamedBatches(_Source):
    """The minibatches of a split read from the HDF5 file a window at a time.

    Same layout as :func:`make_batches` (row ``r`` of batch ``k`` holds tokens
    ``r * L + k * T ... + T`` of the split, where ``L`` is the row length), but only a window
    of ``window`` batches is in memory, and each window's ids are checked as it is read.
    """

    def __init__(self, h5_path: str | Path, split: str, vocab_size: int, batch_size: int, seq_length: int,
                 window: int = 256, log=None) -> None:
        self.path, self.split, self.vocab_size, self.seq_length = Path(h5_path), split, vocab_size, seq_length
        num = split_sizes(self.path, (split,))[split]
        geometry = batch_geometry(num, batch_size, seq_length)
        if geometry is None:
            raise CharRNNError(f"the {split} split has only {num:,} tokens: too few for one sequence of {seq_length}")
        self.N, self.num_batches = geometry
        _reduced(split, num, batch_size, self.N, log)
        self.row_length = self.num_batches * seq_length
        self.rows = range(self.N)
        # a window holds at most about CHUNK_TOKENS tokens, whatever the batch shape
        self.window = max(1, min(window, CHUNK_TOKENS // max(1, self.N * seq_length)))
        self._start, self._x, self._y, self._file = -1, None, None, None

    @property
    def batch_size(self) -> int:
        return len(self.rows)

    def share(self, rows: slice) -> "StreamedBatches":
        twin = object.__new__(StreamedBatches)
        twin.__dict__.update(self.__dict__)
        twin.rows = range(self.N)[rows]
        twin._start, twin._x, twin._y, twin._file = -1, None, None, None
        return twin

    def _load(self, start: int) -> None:
        if self._file is None:
            self._file = _open(self.path)
        ds = self._file[self.split]
        T, count = self.seq_length, min(self.window, self.num_batches - start)
        span = count * T
        block = np.empty((len(self.rows), span + 1), dtype=np.int64)
        try:
            for j, r in enumerate(self.rows):
                begin = r * self.row_length + start * T
                block[j] = ds[begin:begin + span + 1]
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise _read_error(self.path, exc) from None
        _check_ids(block, self.vocab_size, self.path, self.split)
        block = to_model_ids(block)
        self._x = block[:, :span].reshape(len(self.rows), count, T).transpose(1, 0, 2)
        self._y = block[:, 1:].reshape(len(self.rows), count, T).transpose(1, 0, 2)
        self._start = start

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (N, T) of batch ``k``, 0-based ids."""
        if not 0 <= k < self.num_batches:
            raise IndexError(f"batch {k} of {self.num_batches}")
        if self._x is None or not self._start <= k < self._start + self.window:
            self._load(k - k % self.window)
        j = k - self._start
        return np.ascontiguousarray(self._x[j]), np.ascontiguousarray(self._y[j])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None




def open_batches(h5_path: str | Path, split: str, vocab: Vocabulary, batch_size: int, seq_length: int,
                 stream: bool | None = None, log=None) -> InMemoryBatches | StreamedBatches | None:
    """The batches of a split: in memory, or streamed (``stream=None``: when longer than STREAM_TOKENS).

    Returns None when the split cannot hold one sequence of ``seq_length``.
    """
    num = split_sizes(h5_path, (split,))[split]
    if batch_geometry(num, batch_size, seq_length) is None:
        return None
    if stream if stream is not None else num > STREAM_TOKENS:
        return StreamedBatches(h5_path, split, len(vocab), batch_size, seq_length, log=log)
    return make_batches(load_splits(h5_path, vocab, (split,))[split], batch_size, seq_length, split, log)
