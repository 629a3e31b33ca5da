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


def load_splits(h5_path: str | Path, vocab: Vocabulary, splits=SPLITS) -> dict[str, np.ndarray]:
    """Read and validate the named splits of a torch-rnn HDF5 file against ``vocab``."""
    import h5py

    path = check_readable_file(h5_path, "HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            out = {}
            for name in splits:
                if name not in f:
                    raise CharRNNError(f"{path}: no '/{name}' dataset (is this a file from charrnn or torch-rnn preprocess?)")
                ds = f[name]
                if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind not in "ui":
                    raise CharRNNError(f"{path}: '/{name}' must be a 1-D integer dataset (found {getattr(ds, 'dtype', 'a group')})")
                out[name] = ds[()]
    except CharRNNError:
        raise
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
