"""Reading charrnn's ``.pt`` checkpoints without importing torch, for fast start-up of sampling.

A ``.pt`` file is a zip archive holding a pickle (``data.pkl``) and raw tensor storages. The
unpickler here resolves exactly three globals (OrderedDict, torch's tensor-rebuild function and
its typed storage classes), each mapped to a NumPy constructor, and refuses everything else,
so, like ``torch.load(weights_only=True)``, a checkpoint cannot run code.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .errors import CharRNNError
from .vocab import Vocabulary

FORMAT = "charrnn-checkpoint"
VERSION = 1
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
             "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
REFUSED = ("refusing to load: the file holds Python objects, not just tensors "
           "(a checkpoint must not be able to run code)")


@dataclass
class Payload:
    """A checkpoint's validated contents (tensors as torch tensors or NumPy arrays)."""

    config: ModelConfig
    vocab: Vocabulary
    model_state: dict
    iteration: int
    train_state: dict


def parse_payload(path: Path, data: object) -> Payload:
    """Check a loaded checkpoint's format, version and fields; clear errors otherwise."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CharRNNError(f"{path}: not a charrnn checkpoint")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CharRNNError(f"{path}: checkpoint format version {version} is newer than this charrnn understands "
                           f"(version {VERSION}); upgrade charrnn")
    try:
        config = ModelConfig(**data["model_config"])
        vocab = Vocabulary(tuple(int(t) for t in data["vocab"]["tokens"]), bool(data["vocab"]["byte_mode"]))
        if config.vocab_size != len(vocab):
            raise CharRNNError(f"{path}: vocabulary size does not match the model")
        return Payload(config, vocab, data["model"], int(data.get("iteration", 0)), data.get("train_state") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise CharRNNError(f"{path}: damaged checkpoint (missing or bad field: {exc})") from None


class _StorageType:
    def __init__(self, dtype) -> None:
        self.dtype = np.dtype(dtype)


def strided_copy(storage: np.ndarray, offset: int, size, stride) -> np.ndarray:
    """A copy of the tensor view (offset, size, stride) of a 1-D storage, bounds-checked.

    Raises ValueError when the view is malformed or reaches outside the storage, so a hostile
    file can never make NumPy read memory it does not own.
    """
    size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise ValueError("malformed tensor")
    if not size:
        if not 0 <= offset < len(storage):
            raise ValueError("tensor reaches outside its storage")
        return storage[offset:offset + 1].reshape(()).copy()
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or last >= len(storage):
        raise ValueError("tensor reaches outside its storage")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[s * storage.itemsize for s in stride], writeable=False)
    return np.array(view)


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *unused) -> np.ndarray:
    try:
        return strided_copy(storage, offset, size, stride)
    except ValueError as exc:
        raise pickle.UnpicklingError(str(exc)) from None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError("unsupported persistent id")
        _, kind, key, _location, numel = pid
        raw = self.archive.read(f"{self.prefix}data/{key}")
        if len(raw) < numel * kind.dtype.itemsize:
            raise pickle.UnpicklingError("storage shorter than declared")
        return np.frombuffer(raw, dtype=kind.dtype, count=numel)


def read_pt(path: str | Path) -> Payload:
    """A charrnn ``.pt`` checkpoint, its tensors as NumPy arrays, without torch."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CharRNNError(f"{path}: the checkpoint file is empty")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pickles) != 1:
                raise CharRNNError(f"{path}: not a charrnn checkpoint")
            prefix = pickles[0][: -len("data.pkl")]
            order = prefix + "byteorder"
            if order in archive.namelist() and archive.read(order).strip() != b"little":
                raise CharRNNError(f"{path}: big-endian checkpoints are not supported")
            with archive.open(pickles[0]) as f:
                data = _Unpickler(f, archive, prefix).load()
    except CharRNNError:
        raise
    except pickle.UnpicklingError as exc:
        if "not allowed" in str(exc):
            raise CharRNNError(f"{path}: {REFUSED}") from None
        raise CharRNNError(f"{path}: not a readable charrnn checkpoint (truncated or foreign file: {exc})") from None
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError, RecursionError, MemoryError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CharRNNError(f"{path}: not a readable charrnn checkpoint (truncated or foreign file: {reason[:160]})") from None
    return parse_payload(path, data)
