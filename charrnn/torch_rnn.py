"""Reading Lua torch-rnn checkpoints (``.t7``) without Lua and without building arbitrary objects.

The Torch7 serialisation is parsed by a small strict reader: tables become dicts, tensors
and storages become NumPy arrays (bounds-checked copies), class instances become
:class:`T7Object` records. Nothing else is ever constructed, and no code in the file runs.

(The ``torchfile`` package reads the same format, but maps tensors onto storages with
``as_strided`` and no bounds checks, trusts every size in the file, and still carries
Python 2 code paths; for untrusted files charrnn uses this reader instead.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import CharRNNError
from .config import ModelConfig
from .ptreader import strided_copy
from .vocab import Vocabulary

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN, FUNCTION, RECUR_FUNCTION, LEGACY_RECUR_FUNCTION = range(9)
_STORAGE_DTYPES = {
    "Byte": np.uint8, "Char": np.int8, "Short": np.int16, "Int": np.int32, "Long": np.int64,
    "Float": np.float32, "Double": np.float64, "Half": np.float16, "Cuda": np.float32,
    "CudaDouble": np.float64, "CudaLong": np.int64, "CudaInt": np.int32, "CudaByte": np.uint8,
}
MAX_DEPTH = 200


class T7Error(ValueError):
    pass


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
        raw = bytes(self._take(self.int()))
        return raw.decode("utf-8", errors="surrogateescape")

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
            table: dict = {}
            self.memo[index] = table
            size = self.int()
            if size < 0 or size > len(self.data):
                raise T7Error("implausible table size")
            for _ in range(size):
                key, value = self.obj(depth + 1), self.obj(depth + 1)
                if not isinstance(key, (str, int, float, bool)):
                    raise T7Error("table key of an unsupported type")
                table[key] = value
            return table
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

    def _storage(self, elem: str) -> np.ndarray:
        dtype = np.dtype(_STORAGE_DTYPES[elem]).newbyteorder("<")
        size = self.long()
        if size < 0 or size * dtype.itemsize > len(self.data) - self.pos:
            raise T7Error("storage larger than the file (truncated?)")
        return np.frombuffer(self._take(size * dtype.itemsize), dtype=dtype).copy()

    def _tensor(self, depth: int) -> np.ndarray:
        ndim = self.int()
        if not 0 <= ndim <= 16:
            raise T7Error("implausible tensor rank")
        size = [self.long() for _ in range(ndim)]
        stride = [self.long() for _ in range(ndim)]
        offset = self.long() - 1
        storage = self.obj(depth + 1)
        if ndim == 0 or storage is None:
            return np.zeros((0,), dtype=np.float32)
        if not isinstance(storage, np.ndarray):
            raise T7Error("malformed tensor")
        try:
            return strided_copy(storage, offset, size, stride)
        except ValueError as exc:
            raise T7Error(str(exc)) from None


def read_t7(path: str | Path):
    """Parse a Torch7 binary file into dicts, NumPy arrays and :class:`T7Object` records."""
    data = Path(path).read_bytes()
    try:
        return _Reader(data).obj()
    except T7Error as exc:
        raise CharRNNError(f"{path}: not a readable Torch7 file ({exc})") from None
    except (struct.error, RecursionError, MemoryError, UnicodeError) as exc:
        raise CharRNNError(f"{path}: not a readable Torch7 file ({type(exc).__name__})") from None


# -- torch-rnn's LanguageModel -> CharRNN ------------------------------------------------------
def _as_list(table, what: str) -> list:
    if isinstance(table, list):
        return table
    if isinstance(table, dict) and all(isinstance(k, int) for k in table) and \
            sorted(table) == list(range(1, len(table) + 1)):
        return [table[k] for k in range(1, len(table) + 1)]
    raise CharRNNError(f"torch-rnn checkpoint: '{what}' is not a list")


def _field(fields: dict, name: str, where: str):
    if not isinstance(fields, dict) or name not in fields:
        raise CharRNNError(f"torch-rnn checkpoint: {where} has no '{name}' field")
    return fields[name]


def _lstm_gates_to_pytorch(matrix: np.ndarray, H: int) -> np.ndarray:
    """Reorder the last axis from torch-rnn's gates (i, f, o, g) to PyTorch's (i, f, g, o)."""
    i, f, o, g = (matrix[..., k * H:(k + 1) * H] for k in range(4))
    return np.concatenate([i, f, g, o], axis=-1)


def _convert_rnn(module: T7Object, kind: str, input_size: int, H: int) -> dict:
    weight = np.asarray(_field(module.fields, "weight", module.typename), dtype=np.float32)
    bias = np.asarray(_field(module.fields, "bias", module.typename), dtype=np.float32)
    gates = 4 if kind == "lstm" else 1
    if weight.shape != (input_size + H, gates * H) or bias.shape != (gates * H,):
        raise CharRNNError(f"torch-rnn checkpoint: {module.typename} weight {weight.shape} does not fit "
                           f"input {input_size} and {H} units")
    if kind == "lstm":
        weight, bias = _lstm_gates_to_pytorch(weight, H), _lstm_gates_to_pytorch(bias, H)
    return {"weight_ih": weight[:input_size].T, "weight_hh": weight[input_size:].T,
            "bias_ih": bias, "bias_hh": np.zeros_like(bias)}


def load_t7_checkpoint(path: str | Path):
    """A torch-rnn ``.t7`` checkpoint as a :class:`charrnn.checkpoint.Checkpoint`."""
    from .checkpoint import Checkpoint

    path = Path(path)
    top = read_t7(path)
    if not isinstance(top, dict) or not isinstance(top.get("model"), T7Object):
        raise CharRNNError(f"{path}: not a torch-rnn checkpoint (no 'model' in the table)")
    lm = top["model"]
    if lm.typename != "nn.LanguageModel":
        raise CharRNNError(f"{path}: the model is a {lm.typename}, not torch-rnn's nn.LanguageModel")
    f = lm.fields
    names = [str(n) for n in _as_list(_field(f, "idx_to_token", "the model"), "idx_to_token")]
    vocab = Vocabulary.from_json_dict({"idx_to_token": {str(i): n for i, n in enumerate(names, 1)}}, str(path))
    model_type = _field(f, "model_type", "the model")
    if model_type not in ("lstm", "rnn"):
        raise CharRNNError(f"{path}: unsupported torch-rnn model_type {model_type!r}")
    config = ModelConfig(vocab_size=len(vocab), model_type=model_type,
                         wordvec_size=int(_field(f, "wordvec_dim", "the model")),
                         rnn_size=int(_field(f, "rnn_size", "the model")),
                         num_layers=int(_field(f, "num_layers", "the model")),
                         dropout=float(f.get("dropout") or 0), batchnorm=bool(f.get("batchnorm") or 0))
    modules = _as_list(_field(_field(f, "net", "the model").fields, "modules", "nn.Sequential"), "net.modules")
    state, rnns, norms, D, H, V = {}, [], [], config.wordvec_size, config.rnn_size, config.vocab_size
    for module in modules:
        if not isinstance(module, T7Object):
            raise CharRNNError(f"{path}: unexpected entry in the network")
        name = module.typename
        if name == "nn.LookupTable":
            state["embed.weight"] = np.asarray(_field(module.fields, "weight", name), dtype=np.float32)
        elif name in ("nn.LSTM", "nn.VanillaRNN"):
            rnns.append(_convert_rnn(module, "lstm" if name == "nn.LSTM" else "rnn", D if not rnns else H, H))
        elif name == "nn.BatchNormalization":
            norms.append({k: np.asarray(_field(module.fields, k, name), dtype=np.float32)
                          for k in ("weight", "bias", "running_mean", "running_var")})
        elif name == "nn.Linear":
            state["head.weight"] = np.asarray(_field(module.fields, "weight", name), dtype=np.float32)
            state["head.bias"] = np.asarray(_field(module.fields, "bias", name), dtype=np.float32)
        elif name not in ("nn.View", "nn.Dropout"):
            raise CharRNNError(f"{path}: unknown module type {name} in the network")
    if len(rnns) != config.num_layers or len(norms) != (config.num_layers if config.batchnorm else 0):
        raise CharRNNError(f"{path}: the network does not match num_layers={config.num_layers}")
    if state.get("embed.weight", np.zeros(0)).shape != (V, D) or state.get("head.weight", np.zeros(0)).shape != (V, H):
        raise CharRNNError(f"{path}: embedding or output layer missing or of the wrong shape")
    for k, layer in enumerate(rnns):
        for key, value in layer.items():
            state[f"rnns.{k}.{key}_l0" if config.batchnorm else f"rnns.0.{key}_l{k}"] = value
    for k, norm in enumerate(norms):
        for key, value in norm.items():
            state[f"norms.{k}.{key}"] = value
        state[f"norms.{k}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    info = {k: top.get(k) for k in ("opt", "train_loss_history", "val_loss_history", "val_loss_history_it",
                                     "forward_backward_times", "memory_usage") if k in top}
    for key, value in info.items():
        if isinstance(value, dict) and key != "opt":
            info[key] = _as_list(value, key) if value else []
    return Checkpoint(path, config, vocab, tensors, int(top.get("i") or 0), {}, info)
