"""charrnn's ``.pt`` files (a zip holding a pickle and raw tensor storages), read without torch.

The unpickler resolves exactly four kinds of global (OrderedDict, torch's tensor-rebuild
function, its typed storage classes) and refuses everything else, so, like
``torch.load(weights_only=True)``, a file cannot run code. It also cannot make charrnn
allocate more than the file holds: every storage entry's declared size must equal the
``numel x itemsize`` of the storage it backs, decompression stops at that size, and all
storages and tensors together must fit a budget of a few times the file's own size.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import CorruptFile
from .arrays import Budget, FormatError, strided_copy

_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
             "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
REFUSED = ("refusing to load: the file holds Python objects, not just tensors "
           "(a checkpoint must not be able to run code)")
MAX_PICKLE_BYTES = 256 << 20  # the pickle holds structure and histories, never tensor data
MAX_ENTRIES = 100_000
EXPANSION = 4  # storages plus tensor copies may use this many times the file's size (+ 1 MiB)
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}


class Refused(FormatError):
    """The pickle names a global that is not allowed."""


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, np.dtype(_STORAGES[name])


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, budget: Budget) -> None:
        super().__init__(file)
        self.archive, self.prefix, self.budget, self.storages = archive, prefix, budget, {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise Refused(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and not isinstance(pid[4], bool) and pid[4] >= 0):
            raise FormatError("unsupported persistent id (not a tensor storage)")
        _, kind, key, _location, numel = pid
        if key not in self.storages:
            self.storages[key] = (kind, self._read_storage(key, kind.dtype, numel))
        stored_kind, storage = self.storages[key]
        if stored_kind.dtype != kind.dtype or len(storage) != numel:
            raise FormatError(f"storage {key} is declared twice with different types or sizes")
        return storage if kind.name != "BFloat16Storage" else _bfloat16_to_float32(storage)

    def _read_storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        """Exactly ``numel`` elements from the entry ``data/<key>``, streamed, never more."""
        try:
            info = self.archive.getinfo(f"{self.prefix}data/{key}")
        except KeyError:
            raise FormatError(f"storage {key} is missing from the archive") from None
        expected = numel * dtype.itemsize
        if info.compress_type not in _METHODS:
            raise FormatError(f"unsupported zip compression method {info.compress_type} for storage {key}")
        if info.file_size != expected:
            raise FormatError(f"storage {key} declares {info.file_size:,} bytes but its tensors need {expected:,}")
        self.budget.take(expected, f"storage {key}")
        with self.archive.open(info) as f:
            raw = f.read(expected)
            if len(raw) != expected or f.read(1):
                raise FormatError(f"storage {key} does not hold the {expected:,} bytes it declares")
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<"))

    def _rebuild_tensor(self, storage, offset, size, stride, *unused) -> np.ndarray:
        if not isinstance(storage, np.ndarray):
            raise FormatError("a tensor whose storage is not a storage")
        return strided_copy(storage, offset, size, stride, self.budget)


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _open_pickle(archive: zipfile.ZipFile) -> tuple[zipfile.ZipInfo, str]:
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise FormatError("too many entries in the archive")
    pickles = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
    if len(pickles) != 1:
        raise FormatError("no single data.pkl: not a charrnn checkpoint")
    info = pickles[0]
    if info.compress_type not in _METHODS:
        raise FormatError(f"unsupported zip compression method {info.compress_type}")
    if info.file_size > MAX_PICKLE_BYTES:
        raise FormatError(f"data.pkl declares {info.file_size:,} bytes, more than any checkpoint needs")
    return info, info.filename[: -len("data.pkl")]


def read_pt_data(path: str | Path) -> object:
    """The object a ``.pt`` file holds: dicts, lists and scalars, with tensors as NumPy arrays.

    Raises :class:`CorruptFile` for anything that is not a safe, well-formed file.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CorruptFile(path, "the checkpoint file is empty")
    budget = Budget(EXPANSION * size + (1 << 20))
    try:
        with zipfile.ZipFile(path) as archive:
            info, prefix = _open_pickle(archive)
            order = prefix + "byteorder"
            if order in archive.namelist() and archive.read(order)[:16].strip() != b"little":
                raise FormatError("big-endian checkpoints are not supported")
            budget.take(info.file_size, "data.pkl")
            with archive.open(info) as f:
                return _Unpickler(f, archive, prefix, budget).load()
    except Refused:
        raise CorruptFile(path, REFUSED) from None
    except FormatError as exc:
        raise CorruptFile(path, f"not a readable charrnn checkpoint ({exc})") from None
    except zipfile.BadZipFile as exc:
        raise CorruptFile(path, f"not a readable charrnn checkpoint (truncated or foreign file: {exc})") from None
    except Exception as exc:  # the pickle and zip layers raise many types on hostile bytes; all mean "bad file"
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise CorruptFile(path, "not a readable charrnn checkpoint (truncated or foreign file: "
                                f"{type(exc).__name__}{': ' + reason if reason else ''})") from None
