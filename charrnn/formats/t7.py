"""Lua Torch7 files (``.t7``), and torch-rnn's language model in them, read without Lua or torch.

The Torch7 serialisation is parsed by a small strict reader: tables become dicts, tensors
and storages become NumPy arrays (bounded, bounds-checked copies), class instances become
:class:`T7Object` records. Nothing else is ever constructed, and no code in the file runs.
:func:`torch_rnn_payload` then maps torch-rnn's ``nn.LanguageModel`` onto charrnn's plain
checkpoint payload (the same dict a ``.pt`` file holds), checking every field it reads.

(The ``torchfile`` package reads the same format, but maps tensors onto storages with
``as_strided`` and no bounds checks, trusts every size in the file, and still carries
Python 2 code paths; for untrusted files charrnn uses this reader instead.)
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptFile
from ..config import ModelConfig
from ..layout import GATES, LIMITS, NORM_PARTS, norm_key, rnn_key
from .arrays import MAX_RANK, Budget, FormatError, strided_copy

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN, FUNCTION, RECUR_FUNCTION, LEGACY_RECUR_FUNCTION = range(9)
_STORAGE_DTYPES = {
    "Byte": np.uint8, "Char": np.int8, "Short": np.int16, "Int": np.int32, "Long": np.int64,
    "Float": np.float32, "Double": np.float64, "Half": np.float16, "Cuda": np.float32,
    "CudaDouble": np.float64, "CudaLong": np.int64, "CudaInt": np.int32, "CudaByte": np.uint8,
}
MAX_DEPTH = 200
EXPANSION = 4  # storages plus tensor copies may use this many times the file's size (+ 1 MiB)
FORMAT, VERSION = "charrnn-checkpoint", 1  # the payload this module produces (see checkpoint.schema)
HISTORIES = ("train_loss_history", "val_loss_history", "val_loss_history_it", "forward_backward_times",
             "memory_usage")


T7Error = FormatError


@dataclass
class T7Object:
    """An instance of a Torch class (an ``nn`` module, say): its type name and fields."""

    typename: str
    fields: object


def _class_kind(typename: str) -> tuple[str, str] | None:
    """('Tensor'|'Storage', element type) for torch.FloatTensor, torch.CudaStorage, ..."""
    for kind in ("Tensor", "Storage"):
        if typename.startswith("torch.") and typename.endswith(kind):
            elem = typename[len("torch."):-len(kind)]
            if elem in _STORAGE_DTYPES:
                return kind, elem
    return None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.memo = memoryview(data), 0, {}
        self.budget = Budget(EXPANSION * len(data) + (1 << 20))

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise T7Error("unexpected end of file (truncated?)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def _unpack(self, fmt: str):
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def int(self) -> int:
        return self._unpack("<i")

    def long(self) -> int:
        return self._unpack("<q")

    def string(self) -> str:
        return bytes(self._take(self.int())).decode("utf-8", errors="surrogateescape")

    def obj(self, depth: int = 0):
        if depth > MAX_DEPTH:
            raise T7Error("objects nested too deeply")
        kind = self.int()
        if kind == NIL:
            return None
        if kind == NUMBER:
            value = self._unpack("<d")
            return int(value) if value.is_integer() and abs(value) < 2 ** 53 else value
        if kind == STRING:
            return self.string()
        if kind == BOOLEAN:
            return self.int() == 1
        if kind in (FUNCTION, RECUR_FUNCTION, LEGACY_RECUR_FUNCTION):
            raise T7Error("the file contains a Lua function, which charrnn does not load")
        if kind not in (TABLE, TORCH):
            raise T7Error(f"unknown object type {kind} (not a Torch7 file?)")
        index = self.int()
        if index in self.memo:
            return self.memo[index]
        if kind == TABLE:
            return self._table(index, depth)
        version = self.string()
        typename = self.string() if version.startswith("V ") else version
        known = _class_kind(typename)
        if known is None:
            record = T7Object(typename, None)
            self.memo[index] = record
            record.fields = self.obj(depth + 1)
            return record
        kind_name, elem = known
        value = self._storage(elem) if kind_name == "Storage" else self._tensor(depth)
        self.memo[index] = value
        return value

    def _table(self, index: int, depth: int) -> dict:
        table: dict = {}
        self.memo[index] = table
        size = self.int()
        if size < 0 or size * 8 > len(self.data) - self.pos:  # each entry takes at least 8 bytes
            raise T7Error("implausible table size")
        for _ in range(size):
            key, value = self.obj(depth + 1), self.obj(depth + 1)
            if not isinstance(key, (str, int, float, bool)) or (isinstance(key, float) and math.isnan(key)):
                raise T7Error("table key of an unsupported type")
            table[key] = value
        return table

    def _storage(self, elem: str) -> np.ndarray:
        dtype = np.dtype(_STORAGE_DTYPES[elem]).newbyteorder("<")
        size = self.long()
        if size < 0 or size * dtype.itemsize > len(self.data) - self.pos:
            raise T7Error("storage larger than the file (truncated?)")
        self.budget.take(size * dtype.itemsize)
        return np.frombuffer(self._take(size * dtype.itemsize), dtype=dtype).copy()

    def _tensor(self, depth: int) -> np.ndarray:
        ndim = self.int()
        if not 0 <= ndim <= MAX_RANK:
            raise T7Error("implausible tensor rank")
        size = [self.long() for _ in range(ndim)]
        stride = [self.long() for _ in range(ndim)]
        offset = self.long() - 1
        storage = self.obj(depth + 1)
        if ndim == 0 or storage is None:
            return np.zeros((0,), dtype=np.float32)
        if not isinstance(storage, np.ndarray):
            raise T7Error("malformed tensor (its storage is not a storage)")
        return strided_copy(storage, offset, size, stride, self.budget)


def read_t7(path: str | Path):
    """Parse a Torch7 binary file into dicts, NumPy arrays and :class:`T7Object` records."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return _Reader(data).obj()
    except FormatError as exc:
        raise CorruptFile(path, f"not a readable Torch7 file ({exc})") from None
    except (struct.error, RecursionError, MemoryError, UnicodeError, OverflowError) as exc:
        raise CorruptFile(path, f"not a readable Torch7 file ({type(exc).__name__})") from None


# -- torch-rnn's LanguageModel -> charrnn's payload ----------------------------------------------
class _Fields:
    """Checked access to the fields of a torch-rnn object; errors name the field."""

    def __init__(self, path: Path, fields, where: str) -> None:
        if not isinstance(fields, dict):
            raise CorruptFile(path, f"torch-rnn checkpoint: {where} has no fields")
        self.path, self.fields, self.where = path, fields, where

    def fail(self, name: str, problem: str) -> CorruptFile:
        return CorruptFile(self.path, f"torch-rnn checkpoint: {self.where} field '{name}' {problem}")

    def get(self, name: str):
        if name not in self.fields:
            raise self.fail(name, "is missing")
        return self.fields[name]

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int:
        value = self.fields.get(name)
        if value is None and default is not None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(name, f"must be a whole number in {low}..{high} (found {_shown(value)})")
        return value

    def array(self, name: str) -> np.ndarray:
        value = self.get(name)
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            raise self.fail(name, "must be a floating-point tensor")
        return value.astype(np.float32)


def _shown(value) -> str:
    return "nil" if value is None else (repr(value) if isinstance(value, (int, float, bool)) else type(value).__name__)


def _as_list(path: Path, table, what: str) -> list:
    if isinstance(table, list):
        return table
    if isinstance(table, dict) and all(isinstance(k, int) and not isinstance(k, bool) for k in table) and \
            sorted(table) == list(range(1, len(table) + 1)):
        return [table[k] for k in range(1, len(table) + 1)]
    raise CorruptFile(path, f"torch-rnn checkpoint: '{what}' is not a list")


def _lstm_gates_to_pytorch(matrix: np.ndarray, H: int) -> np.ndarray:
    """Reorder the last axis from torch-rnn's gates (i, f, o, g) to PyTorch's (i, f, g, o)."""
    i, f, o, g = (matrix[..., k * H:(k + 1) * H] for k in range(4))
    return np.concatenate([i, f, g, o], axis=-1)


def _convert_rnn(f: _Fields, kind: str, input_size: int, H: int) -> dict:
    weight, bias = f.array("weight"), f.array("bias")
    gates = GATES[kind]
    if weight.shape != (input_size + H, gates * H) or bias.shape != (gates * H,):
        raise f.fail("weight", f"has shape {weight.shape}, which does not fit input {input_size} and {H} units")
    if kind == "lstm":
        weight, bias = _lstm_gates_to_pytorch(weight, H), _lstm_gates_to_pytorch(bias, H)
    return {"weight_ih": weight[:input_size].T, "weight_hh": weight[input_size:].T,
            "bias_ih": bias, "bias_hh": np.zeros_like(bias)}


def _model_config(path: Path, f: _Fields, vocab_size: int) -> dict:
    model_type = f.get("model_type")
    if model_type not in ("lstm", "rnn"):
        raise f.fail("model_type", f"must be 'lstm' or 'rnn' (found {_shown(model_type)})")
    dropout = f.fields.get("dropout")
    if dropout is None or dropout is False:
        dropout = 0.0
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise f.fail("dropout", f"must be a number in [0, 1) (found {_shown(dropout)})")
    batchnorm = f.fields.get("batchnorm")
    if batchnorm not in (None, 0, 1, True, False):
        raise f.fail("batchnorm", f"must be 0 or 1 (found {_shown(batchnorm)})")
    return {"vocab_size": vocab_size, "model_type": model_type,
            "wordvec_size": f.integer("wordvec_dim", 1, LIMITS["wordvec_size"]),
            "rnn_size": f.integer("rnn_size", 1, LIMITS["rnn_size"]),
            "num_layers": f.integer("num_layers", 1, LIMITS["num_layers"]),
            "dropout": float(dropout), "batchnorm": bool(batchnorm)}


def _vocab(path: Path, f: _Fields) -> dict:
    from ..vocab import Vocabulary

    names = _as_list(path, f.get("idx_to_token"), "idx_to_token")
    if not all(isinstance(n, str) for n in names):
        raise f.fail("idx_to_token", "must hold strings")
    vocab = Vocabulary.from_json_dict({"idx_to_token": {str(i): n for i, n in enumerate(names, 1)}}, str(path))
    return {"tokens": list(vocab.tokens), "byte_mode": vocab.byte_mode}


def _weights(path: Path, net: _Fields, config: dict) -> dict:
    modules = _as_list(path, net.get("modules"), "net.modules")
    state, rnns, norms = {}, [], []
    D, H = config["wordvec_size"], config["rnn_size"]
    for module in modules:
        if not isinstance(module, T7Object):
            raise CorruptFile(path, "torch-rnn checkpoint: unexpected entry in the network")
        name = module.typename
        f = _Fields(path, module.fields, name)
        if name == "nn.LookupTable":
            state["embed.weight"] = f.array("weight")
        elif name in ("nn.LSTM", "nn.VanillaRNN"):
            rnns.append(_convert_rnn(f, "lstm" if name == "nn.LSTM" else "rnn", D if not rnns else H, H))
        elif name == "nn.BatchNormalization":
            norms.append({k: f.array(k) for k in NORM_PARTS if k != "num_batches_tracked"})
        elif name == "nn.Linear":
            state["head.weight"], state["head.bias"] = f.array("weight"), f.array("bias")
        elif name not in ("nn.View", "nn.Dropout"):
            raise CorruptFile(path, f"unknown module type {name} in the network")
    L = config["num_layers"]
    if len(rnns) != L or len(norms) != (L if config["batchnorm"] else 0):
        raise CorruptFile(path, f"torch-rnn checkpoint: the network holds {len(rnns)} recurrent and {len(norms)} "
                                f"batch-norm layers, which does not match num_layers={L}")
    layout = ModelConfig(**config)
    for k, layer in enumerate(rnns):
        for part, value in layer.items():
            state[rnn_key(layout, k, part)] = np.ascontiguousarray(value)
    for k, norm in enumerate(norms):
        for part, value in norm.items():
            state[norm_key(k, part)] = value
        state[norm_key(k, "num_batches_tracked")] = np.array(0, dtype=np.int64)  # Lua's has no counter
    return state


def _iteration(path: Path, value) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 53:
        raise CorruptFile(path, f"torch-rnn checkpoint: field 'i' (the iteration) must be a whole number >= 0 "
                                f"(found {_shown(value)})")
    return value


def torch_rnn_payload(path: str | Path) -> dict:
    """A torch-rnn ``.t7`` checkpoint as charrnn's plain payload (NumPy weights), field by field checked."""
    path = Path(path)
    top = read_t7(path)
    if not isinstance(top, dict) or not isinstance(top.get("model"), T7Object):
        raise CorruptFile(path, "not a torch-rnn checkpoint (no 'model' in the table)")
    lm = top["model"]
    if lm.typename != "nn.LanguageModel":
        raise CorruptFile(path, f"the model is a {lm.typename}, not torch-rnn's nn.LanguageModel")
    f = _Fields(path, lm.fields, "the model")
    vocab = _vocab(path, f)
    config = _model_config(path, f, len(vocab["tokens"]))
    net = f.get("net")
    if not isinstance(net, T7Object):
        raise f.fail("net", "must be an nn.Sequential")
    state = _weights(path, _Fields(path, net.fields, net.typename), config)
    info = {k: top[k] for k in ("opt", *HISTORIES) if k in top}
    for key in HISTORIES:
        if isinstance(info.get(key), dict):
            info[key] = _as_list(path, info[key], key) if info[key] else []
    return {"format": FORMAT, "version": VERSION, "model_config": config, "vocab": vocab, "model": state,
            "iteration": _iteration(path, top.get("i")), "train_state": {}, "info": info}
