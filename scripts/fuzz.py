#!/usr/bin/env python
"""A structure-aware fuzzer for the files charrnn reads from strangers.

    python scripts/fuzz.py --minutes 5 [--seed S] [--out fuzz-out] [--spawn]

Builds small valid seed files (a trained ``.pt`` with resume state, a torch-rnn ``.t7``, an
HDF5 token file and its JSON vocabulary), then, until the time is up, derives hostile mutants
of each format and runs every mutant through the commands that read that format:

* ``.pt`` (pickle opcodes, tensor metadata, zip headers and entries) and ``.t7`` (type tags,
  sizes, strides, tables, field values, reference cycles): ``sample``, ``eval``,
  ``train --resume`` (``.pt``) and ``convert``;
* HDF5 (declared sizes, sparse/external/virtual storage, dtypes, ids, corrupt bytes):
  ``eval`` and ``train``;
* JSON vocabularies (nesting, huge numbers, ids, surrogates, byte names): ``train``, ``eval``
  and ``preprocess``.

Each run is a separate process under a memory limit and a timeout. The limit (``RLIMIT_AS``) is
relative to this installation: what a no-op run maps (torch's CPU wheel about 0.7 GB of address
space, its CUDA wheel about 3 GB, mostly libraries it never touches on the CPU) plus a fixed
allowance for the command's own work, so a reader that allocates by a declared size before
checking it fails under either build. An outcome
is *clean* (exit 1-2 and exactly one stderr line ``charrnn: error: ...`` that does not blame
memory), *accepted* (exit 0), or a *failure* (anything else: internal error, traceback, crash,
timeout, "out of memory"). Failures are kept under ``--out`` with the command that reproduces
them. The report gives counts per format and the slowest time and largest resident memory per
command (by default each run is forked from a process that has already imported charrnn and
torch, so times exclude start-up; ``--spawn`` starts a fresh interpreter for each run).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import math
import os
import pickletools
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", "Duplicate name", UserWarning)  # the duplicate-entry mutant, on purpose
MEMORY_ALLOWANCE = 2 << 30  # address space a run may map beyond a no-op run of this installation
# what a no-op run imports: the modules of the commands the campaign runs
NOOP_IMPORTS = ("charrnn.cli", "charrnn.evaluation", "charrnn.sampling.sampler", "charrnn.training.loop")
TIMEOUT = 60.0
TINY = ["--rnn-size", "16", "--wordvec-size", "8", "--num-layers", "2", "--batch-size", "2", "--seq-length", "8",
        "--gpu", "-1", "--print-every", "0"]
HOSTILE_INTS = [0, -1, 1, 2, 3, 7, 255, 2 ** 31 - 1, -2 ** 31, 2 ** 32, 2 ** 40, 10 ** 6, 2 ** 62, 3 * 10 ** 9]
HOSTILE_FLOATS = [math.nan, math.inf, -math.inf, -1.0, 0.0, 0.5, 1.0, 5.0, 1e308, 2.0 ** 53]
HOSTILE_VALUES = [None, "x", "", -1, 0, 1, 10 ** 6, 2 ** 53 + 1, math.nan, math.inf, -math.inf, True, False, 0.5,
                  1.5, [], {}, [1, 2], "lstm", "gru"]


# -- seed files --------------------------------------------------------------------------------------
def corpus_text(n: int = 6000) -> str:
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog and then sleeps".split()
    out = []
    while sum(map(len, out)) < n:
        out.append(" ".join(rng.choice(words) for _ in range(6)).capitalize() + ".\n")
    return "".join(out)[:n]


@dataclass
class Seeds:
    dir: Path
    corpus: Path
    h5: Path
    json: Path
    pt: Path
    t7: Path


def charrnn_command(*args) -> list[str]:
    return [sys.executable, "-m", "charrnn", *[str(a) for a in args]]


def make_seeds(work: Path) -> Seeds:
    """Valid files of every format (made by charrnn itself; the .t7 by a small Torch7 writer)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    corpus = work / "corpus.txt"
    corpus.write_text(corpus_text())
    subprocess.run(charrnn_command("preprocess", "--input-txt", corpus, "--quiet"), check=True, env=env)
    h5, js = work / "corpus.h5", work / "corpus.json"
    subprocess.run(charrnn_command("train", "--input-h5", h5, "--input-json", js, *TINY, "--max-iters", "2",
                                   "--checkpoint-every", "0", "--checkpoint-name", work / "seed", "--quiet"),
                   check=True, env=env)
    t7 = work / "seed_7.t7"
    t7.write_bytes(T7Writer().write(t7_tree(np.random.default_rng(0))).bytes())
    return Seeds(work, corpus, h5, js, work / "seed_2.pt", t7)


# -- a minimal Torch7 writer (with references, so that cycles can be written) --------------------------
class Module:
    def __init__(self, typename: str, **fields) -> None:
        self.typename, self.fields = typename, fields


@dataclass
class RawTensor:
    """A tensor written with arbitrary metadata: size, stride, 1-based offset, storage length."""

    size: list
    stride: list
    offset: int
    storage: int
    dtype: str = "Float"


class T7Writer:
    def __init__(self) -> None:
        self.out, self.next_index, self.seen = io.BytesIO(), 1, {}
        self.positions: list[tuple[int, str]] = []  # where type tags and sizes sit, for byte-level mutation

    def _int(self, v: int, what: str = "int") -> None:
        self.positions.append((self.out.tell(), what))
        self.out.write(struct.pack("<i", v))

    def _long(self, v: int) -> None:
        self.positions.append((self.out.tell(), "long"))
        self.out.write(struct.pack("<q", v))

    def _str(self, s: str) -> None:
        raw = s.encode("utf-8", "surrogateescape")
        self._int(len(raw), "size")
        self.out.write(raw)

    def _ref(self, obj) -> bool:
        """Write the object's index; True when it was written before (a reference)."""
        if id(obj) in self.seen:
            self._int(self.seen[id(obj)], "index")
            return True
        self.seen[id(obj)] = self.next_index
        self._int(self.next_index, "index")
        self.next_index += 1
        return False

    def write(self, obj) -> "T7Writer":
        if obj is None:
            self._int(0, "tag")
        elif isinstance(obj, bool):
            self._int(5, "tag"), self._int(int(obj))
        elif isinstance(obj, (int, float)):
            self._int(1, "tag")
            self.out.write(struct.pack("<d", float(obj)))
        elif isinstance(obj, str):
            self._int(2, "tag"), self._str(obj)
        elif isinstance(obj, (dict, list)):
            self._int(3, "tag")
            if self._ref(obj):
                return self
            items = list(obj.items() if isinstance(obj, dict) else enumerate(obj, 1))
            self._int(len(items), "size")
            for k, v in items:
                self.write(k), self.write(v)
        elif isinstance(obj, np.ndarray):
            arr = np.ascontiguousarray(obj, dtype=np.float32)
            self._int(4, "tag"), self._ref(obj), self._str("V 1"), self._str("torch.FloatTensor")
            self._int(arr.ndim, "size")
            for n in arr.shape:
                self._long(n)
            for s in arr.strides:
                self._long(s // 4)
            self._long(1)
            self._int(4, "tag"), self._int(self.next_index, "index"), self._str("V 1"), self._str("torch.FloatStorage")
            self.next_index += 1
            self._long(arr.size)
            self.out.write(arr.tobytes())
        elif isinstance(obj, RawTensor):
            self._int(4, "tag"), self._ref(obj), self._str("V 1"), self._str(f"torch.{obj.dtype}Tensor")
            self._int(len(obj.size), "size")
            for n in list(obj.size) + list(obj.stride):
                self._long(n)
            self._long(obj.offset)
            self._int(4, "tag"), self._int(self.next_index, "index"), self._str("V 1")
            self._str(f"torch.{obj.dtype}Storage")
            self.next_index += 1
            self._long(obj.storage)
            self.out.write(b"\0" * max(0, min(obj.storage, 1 << 16) * 4))
        elif isinstance(obj, Module):
            self._int(4, "tag")
            if self._ref(obj):
                return self
            self._str("V 1"), self._str(obj.typename)
            self.write(obj.fields)
        else:
            raise TypeError(type(obj))
        return self

    def bytes(self) -> bytes:
        return self.out.getvalue()


def t7_tree(rng, V: int = 5, D: int = 3, H: int = 4, layers: int = 2, batchnorm: bool = False) -> dict:
    """torch-rnn's checkpoint table for a small random LSTM language model."""
    tokens = ["a", "b", "c", " ", "\n"][:V]
    modules = [Module("nn.LookupTable", weight=rng.normal(size=(V, D)))]
    for k in range(layers):
        modules.append(Module("nn.LSTM", weight=rng.normal(size=((D if k == 0 else H) + H, 4 * H)) * 0.5,
                              bias=rng.normal(size=4 * H) * 0.5, hidden_dim=H))
        if batchnorm:
            modules.append(Module("nn.BatchNormalization", weight=np.ones(H), bias=np.zeros(H),
                                  running_mean=np.zeros(H), running_var=np.ones(H)))
    modules += [Module("nn.View", size=[-1, H]), Module("nn.Linear", weight=rng.normal(size=(V, H)),
                                                         bias=rng.normal(size=V))]
    model = Module("nn.LanguageModel", idx_to_token=tokens, token_to_idx={t: i for i, t in enumerate(tokens, 1)},
                   vocab_size=V, model_type="lstm", wordvec_dim=D, rnn_size=H, num_layers=layers, dropout=0,
                   batchnorm=int(batchnorm), net=Module("nn.Sequential", modules=modules))
    return {"model": model, "i": 7, "opt": {"batch_size": 2, "seq_length": 3, "input_h5": "x.h5"},
            "train_loss_history": [2.0, 1.5], "val_loss_history": [1.4], "val_loss_history_it": [7],
            "forward_backward_times": [], "memory_usage": []}


# -- .pt mutators ----------------------------------------------------------------------------------------
def zip_entries(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def build_zip(entries, compress: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, raw in entries:
            method = (compress or {}).get(name, zipfile.ZIP_STORED)
            z.writestr(zipfile.ZipInfo(name), raw, compress_type=method)
    return buf.getvalue()


def pickle_ops(pkl: bytes) -> list[tuple[object, object, int, int]]:
    """(opcode, arg, start, end) of every opcode; stops quietly at the first malformed one."""
    ops, prev = [], None
    try:
        for op, arg, pos in pickletools.genops(pkl):
            if prev is not None:
                ops.append((*prev[:3], pos))
            prev = (op, arg, pos)
        if prev is not None:
            ops.append((*prev[:3], prev[2] + 1))
    except Exception:
        pass
    return ops


def encode_int(v: int) -> bytes:
    if -2 ** 31 <= v < 2 ** 31:
        return b"J" + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def encode_str(s: str) -> bytes:
    raw = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def replace_op(pkl: bytes, op, new: bytes) -> bytes:
    return pkl[:op[2]] + new + pkl[op[3]:]


def mutate_pickle(rng: random.Random, pkl: bytes) -> tuple[bytes, str]:
    ops = pickle_ops(pkl)
    ints = [o for o in ops if o[0].name in ("BININT", "BININT1", "BININT2", "LONG1")]
    strs = [o for o in ops if o[0].name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8")]
    floats = [o for o in ops if o[0].name == "BINFLOAT"]
    globs = [o for o in ops if o[0].name == "GLOBAL"]
    kind = rng.choice(["int", "int", "int", "str", "str", "float", "global", "struct", "struct", "truncate"])
    if kind == "int" and ints:
        o = rng.choice(ints)
        v = rng.choice(HOSTILE_INTS + [o[1] + rng.choice([-1, 1]), o[1] * 2])
        return replace_op(pkl, o, encode_int(v)), f"pickle int {o[1]} -> {v}"
    if kind == "str" and strs:
        o = rng.choice(strs)
        v = rng.choice([s[1] for s in strs] + ["", "x" * 300, "gru", "rnn", "\ud800", "embed.weight", "tokens",
                                                "[300]", o[1] + "x"])
        return replace_op(pkl, o, encode_str(v)), f"pickle str {o[1]!r:.30} -> {v!r:.30}"
    if kind == "float" and floats:
        o = rng.choice(floats)
        v = rng.choice(HOSTILE_FLOATS)
        return replace_op(pkl, o, b"G" + struct.pack(">d", v)), f"pickle float {o[1]} -> {v}"
    if kind == "global" and globs:
        o = rng.choice(globs)
        m, n = rng.choice([("torch", "LongStorage"), ("torch", "ByteStorage"), ("torch", "BFloat16Storage"),
                           ("torch", "HalfStorage"), ("torch", "BoolStorage"), ("collections", "OrderedDict"),
                           ("torch._utils", "_rebuild_tensor_v2"), ("os", "system"), ("builtins", "eval"),
                           ("torch", "Tensor"), ("torch", "FloatStorage")])
        return replace_op(pkl, o, b"c" + f"{m}\n{n}\n".encode()), f"pickle global {o[1]} -> {m}.{n}"
    if kind == "truncate" and ops:
        o = rng.choice(ops)
        return pkl[:o[2]], f"pickle truncated at {o[2]}"
    if not ops:
        return pkl[: rng.randrange(len(pkl) + 1)], "pickle truncated"
    i = rng.randrange(len(ops))
    o = ops[i]
    how = rng.choice(["delete", "duplicate", "swap", "insert"])
    if how == "delete":
        return pkl[:o[2]] + pkl[o[3]:], f"pickle delete {o[0].name}"
    if how == "duplicate":
        return pkl[:o[3]] + pkl[o[2]:o[3]] + pkl[o[3]:], f"pickle duplicate {o[0].name}"
    if how == "swap" and i + 1 < len(ops):
        p = ops[i + 1]
        return pkl[:o[2]] + pkl[p[2]:p[3]] + pkl[o[2]:o[3]] + pkl[p[3]:], f"pickle swap {o[0].name}/{p[0].name}"
    ins = rng.choice([b"N", b")", b"}", b"](", b"\x88", b"0", b"R", b"b", b"s", b"u", b"e", b"t", b"(", b"h\x01",
                      b"Q", b"\x81"])
    return pkl[:o[2]] + ins + pkl[o[2]:], f"pickle insert {ins!r} before {o[0].name}"


def _storage_keys(entries) -> list[str]:
    return [n.split("/data/")[1] for n, _ in entries if "/data/" in n and not n.endswith("serialization_id")]


def bomb_bytes(size: int, _cache: dict = {}) -> bytes:  # noqa: B006  (a cache on purpose)
    if size not in _cache:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        chunk = b"\0" * (1 << 20)
        _cache[size] = b"".join([c.compress(chunk) for _ in range(size >> 20)] + [c.flush()])
    return _cache[size]


def deflate_bomb(rng: random.Random, entries, sizes=(64 << 20, 256 << 20)) -> tuple[bytes, str]:
    """A storage entry declared (and deflated) far larger than its file: the pickle agrees or not."""
    keys = _storage_keys(entries)
    key = rng.choice(keys)
    size = rng.choice(sizes)
    raw_deflated = bomb_bytes(size)
    prefix = entries[0][0].split("/")[0]
    pkl_name = f"{prefix}/data.pkl"
    pkl = dict(entries)[pkl_name]
    agree = rng.random() < 0.5
    if agree:  # make the pickle's numel for that storage match the bomb
        ops = pickle_ops(pkl)
        for j, o in enumerate(ops[:-2]):
            if o[1] == key and ops[j + 1][1] == "cpu" and ops[j + 2][0].name.startswith("BININT"):
                pkl = replace_op(pkl, ops[j + 2], encode_int(size // 4))
                break
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, raw in entries:
            if name == f"{prefix}/data/{key}":
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                # write a placeholder, then patch sizes and data by hand below
                z.writestr(info, b"", compress_type=zipfile.ZIP_STORED)
            else:
                z.writestr(zipfile.ZipInfo(name), pkl if name == pkl_name else raw)
    data = patch_entry(buf.getvalue(), f"{prefix}/data/{key}", raw_deflated, size)
    return data, f"deflate bomb {size >> 20} MB in storage {key} (pickle {'agrees' if agree else 'unchanged'})"


def patch_entry(data: bytes, name: str, deflated: bytes, size: int) -> bytes:
    """Rebuild a zip with ``name`` holding raw deflate data that inflates to ``size`` bytes."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    central = []
    for info in src.infolist():
        raw = src.read(info) if info.filename != name else deflated
        method = zipfile.ZIP_DEFLATED if info.filename == name else zipfile.ZIP_STORED
        crc = zlib.crc32(src.read(info)) if info.filename != name else zlib.crc32(b"\0" * size)
        usize = len(raw) if info.filename != name else size
        fname = info.filename.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(raw), usize, len(fname), 0))
        out.write(fname)
        out.write(raw)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(raw), usize,
                                   len(fname), 0, 0, 0, 0, 0, offset) + fname)
    start = out.tell()
    for c in central:
        out.write(c)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


def mutate_zip_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Patch a header field of a local or central zip record with a hostile value."""
    data = bytearray(data)
    sigs = [(i, "local") for i in _find_all(data, b"PK\x03\x04")] + [(i, "central") for i in _find_all(data, b"PK\x01\x02")]
    if not sigs:
        return bytes(data), "no zip headers"
    at, kind = rng.choice(sigs)
    fields = {"local": {"method": (8, "H"), "csize": (18, "I"), "usize": (22, "I"), "namelen": (26, "H"),
                        "flags": (6, "H")},
              "central": {"method": (10, "H"), "csize": (20, "I"), "usize": (24, "I"), "offset": (42, "I"),
                          "namelen": (28, "H"), "flags": (8, "H")}}[kind]
    name = rng.choice(list(fields))
    off, fmt = fields[name]
    top = 0xFFFF if fmt == "H" else 0xFFFFFFFF
    value = rng.choice([0, 1, 8, 12, 14, 99, top, top - 1, rng.randrange(top + 1), 1 << 20])
    value &= top
    struct.pack_into("<" + fmt, data, at + off, value)
    return bytes(data), f"zip {kind} header {name} -> {value}"


def _find_all(data, needle) -> list[int]:
    out, i = [], data.find(needle)
    while i >= 0:
        out.append(i)
        i = data.find(needle, i + 1)
    return out


def mutate_pt(rng: random.Random, seed: bytes) -> tuple[bytes, str]:
    entries = zip_entries(seed)
    pkl_name = next(n for n, _ in entries if n.endswith("data.pkl"))
    kind = rng.choice(["pickle"] * 6 + ["bomb", "header", "header", "entries", "bytes", "deflate"])
    if kind == "pickle":
        pkl, what = mutate_pickle(rng, dict(entries)[pkl_name])
        if rng.random() < 0.3:  # a second mutation now and then
            pkl, more = mutate_pickle(rng, pkl)
            what += "; " + more
        return build_zip([(n, pkl if n == pkl_name else r) for n, r in entries]), what
    if kind == "bomb":
        return deflate_bomb(rng, entries)
    if kind == "header":
        return mutate_zip_bytes(rng, seed)
    if kind == "deflate":
        names = [n for n, _ in entries]
        return build_zip(entries, {n: zipfile.ZIP_DEFLATED for n in rng.sample(names, k=rng.randint(1, len(names)))}), \
            "entries deflated"
    if kind == "entries":
        how = rng.choice(["drop", "dup", "byteorder", "empty", "resize"])
        if how == "drop":
            k = rng.randrange(len(entries))
            return build_zip(entries[:k] + entries[k + 1:]), f"drop entry {entries[k][0]}"
        if how == "dup":
            k = rng.randrange(len(entries))
            return build_zip(entries + [entries[k]]), f"duplicate entry {entries[k][0]}"
        if how == "byteorder":
            return build_zip([(n, b"big" if n.endswith("byteorder") else r) for n, r in entries]), "big-endian"
        k = rng.choice([i for i, (n, _) in enumerate(entries) if "/data/" in n] or [0])
        name, raw = entries[k]
        new = b"" if how == "empty" else raw + b"\0" * rng.choice([1, 4, 1000]) if rng.random() < 0.5 else raw[:-4]
        return build_zip(entries[:k] + [(name, new)] + entries[k + 1:]), f"{how} entry {name}"
    return flip_bytes(rng, seed)


def flip_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    data = bytearray(data)
    if rng.random() < 0.2:
        cut = rng.randrange(len(data) + 1)
        return bytes(data[:cut]), f"truncated at {cut}"
    n = rng.choice([1, 2, 8, 32])
    for _ in range(n):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data), f"{n} random bytes"


# -- .t7 mutators ----------------------------------------------------------------------------------------
def _model_fields(tree: dict) -> dict:
    return tree["model"].fields


def mutate_t7(rng: random.Random) -> tuple[bytes, str]:
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    tree = t7_tree(nrng, batchnorm=rng.random() < 0.3)
    f = _model_fields(tree)
    modules = f["net"].fields["modules"]
    kind = rng.choice(["field", "field", "field", "top", "cycle", "tensor", "tensor", "modules", "vocab", "bytes",
                       "bytes", "bytes"])
    what = kind
    if kind == "field":
        name = rng.choice(["dropout", "wordvec_dim", "rnn_size", "num_layers", "model_type", "batchnorm",
                           "idx_to_token", "net", "vocab_size"])
        value = rng.choice(HOSTILE_VALUES)
        if value is None and rng.random() < 0.5:
            del f[name]
        else:
            f[name] = value
        what = f"model field {name} -> {value!r:.30}"
    elif kind == "top":
        name = rng.choice(["i", "opt", "train_loss_history", "val_loss_history", "model"])
        value = rng.choice(HOSTILE_VALUES + [{1: 2.0, 3: 4.0}, {"a": [1, {"b": None}]}, [math.nan] * 3])
        tree[name] = value
        what = f"top field {name} -> {value!r:.30}"
    elif kind == "cycle":
        where = rng.choice(["opt", "history", "net", "model"])
        if where == "opt":
            tree["opt"]["self"] = tree["opt"]
        elif where == "history":
            tree["train_loss_history"] = [1.0, tree]
        elif where == "net":
            modules.append(f["net"])
        else:
            f["idx_to_token"] = [f, "a"]
        what = f"reference cycle in {where}"
    elif kind == "tensor":
        module = rng.choice([m for m in modules if "weight" in m.fields])
        name = rng.choice(["weight", "bias"]) if "bias" in module.fields else "weight"
        shape = list(module.fields[name].shape)
        how = rng.choice(["shape", "meta", "storage", "dtype", "scalar"])
        if how == "shape":
            shape[rng.randrange(len(shape))] += rng.choice([-1, 1, 1000])
            module.fields[name] = np.zeros([max(0, s) for s in shape])
        elif how == "meta":
            size = [rng.choice([n, n * 1000, 0, 2 ** 40, -1]) for n in shape]
            stride = [rng.choice([1, 0, -1, 2 ** 40, n]) for n in shape]
            module.fields[name] = RawTensor(size, stride, rng.choice([1, 0, -5, 2 ** 40]), math.prod(shape))
        elif how == "storage":
            module.fields[name] = RawTensor(shape, [shape[1], 1][:len(shape)] if len(shape) == 2 else [1],
                                            1, rng.choice([0, 1, 2 ** 40, 2 ** 62]))
        elif how == "dtype":
            module.fields[name] = RawTensor(shape, [shape[1], 1] if len(shape) == 2 else [1], 1, math.prod(shape),
                                            rng.choice(["Long", "Byte", "Double", "Half", "Int"]))
        else:
            module.fields[name] = rng.choice([1.0, "w", None, [1, 2]])
        what = f"tensor {module.typename}.{name}: {how}"
    elif kind == "modules":
        how = rng.choice(["drop", "dup", "unknown", "string", "swap"])
        k = rng.randrange(len(modules))
        if how == "drop":
            del modules[k]
        elif how == "dup":
            modules.insert(k, modules[k])
        elif how == "unknown":
            modules[k] = Module("nn.Frobnicate", weight=np.zeros(3))
        elif how == "string":
            modules[k] = "nn.LSTM"
        else:
            j = rng.randrange(len(modules))
            modules[k], modules[j] = modules[j], modules[k]
        what = f"modules: {how} {k}"
    elif kind == "vocab":
        tokens = list(f["idx_to_token"])
        k = rng.randrange(len(tokens))
        tokens[k] = rng.choice(["\udcff", "ab", "", "[300]", "[12]", tokens[0], "é", "\x00", 7, None])
        f["idx_to_token"] = tokens
        what = f"token {k} -> {tokens[k]!r}"
    writer = T7Writer().write(tree)
    data = writer.bytes()
    if kind == "bytes":
        data = bytearray(data)
        pos, tag = rng.choice(writer.positions)
        if tag == "long":
            struct.pack_into("<q", data, pos, rng.choice(HOSTILE_INTS + [-2 ** 63]))
        else:
            struct.pack_into("<i", data, pos, rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 99, -1, 2 ** 31 - 1, 1 << 20]))
        what = f"{tag} at byte {pos} overwritten"
        data = bytes(data)
    return data, what


# -- HDF5 mutators ---------------------------------------------------------------------------------------
def mutate_h5(rng: random.Random, seeds: Seeds, path: Path) -> str:
    import h5py

    vocab_size = len(json.loads(seeds.json.read_text())["idx_to_token"])
    kind = rng.choice(["sparse", "sparse", "dtype", "ids", "shape", "external", "virtual", "group", "missing",
                       "bytes", "bytes", "chunks"])
    if kind == "bytes":
        data, what = flip_bytes(rng, seeds.h5.read_bytes())
        path.write_bytes(data)
        return f"h5 {what}"
    with h5py.File(seeds.h5, "r") as src:
        splits = {name: src[name][()] for name in ("train", "val", "test")}
    target = rng.choice(["train", "val", "test"])
    with h5py.File(path, "w") as f:
        for name, ids in splits.items():
            if name != target:
                f.create_dataset(name, data=ids)
        ids = splits[target]
        if kind == "sparse":
            n = rng.choice([3 * 10 ** 9, 2 ** 40, 10 ** 8])
            f.create_dataset(target, shape=(n,), dtype=rng.choice(["u1", "u4"]), chunks=(1 << 16,),
                             fillvalue=rng.choice([0, 1]))
            return f"h5 sparse {target} of {n:,} tokens"
        if kind == "chunks":
            f.create_dataset(target, data=ids, chunks=(rng.choice([1, 7, 1024]),),
                             compression=rng.choice([None, "gzip", "lzf"]))
            return f"h5 chunked {target}"
        if kind == "dtype":
            dt = rng.choice(["f4", "f8", "i8", "u8", "i1", "?", "S1", "c8"])
            f.create_dataset(target, data=ids.astype(dt) if dt != "S1" else ids.astype("S1"))
            return f"h5 {target} as {dt}"
        if kind == "ids":
            bad = ids.astype(np.int64)
            k = rng.randrange(len(bad))
            bad[k] = rng.choice([0, -1, vocab_size + 1, 2 ** 40, 2 ** 62])
            f.create_dataset(target, data=bad)
            return f"h5 id {bad[k]} in {target}"
        if kind == "shape":
            shape = rng.choice([(), (len(ids) // 2, 2), (0,), (1,), (2,)])
            data = ids[: max(1, math.prod(shape))].reshape(shape) if shape != (0,) else ids[:0]
            f.create_dataset(target, data=data)
            return f"h5 {target} of shape {shape}"
        if kind == "external":
            f.create_dataset(target, shape=(1000,), dtype="u1", external=[("/etc/hostname", 0, 1000)])
            return f"h5 {target} with external storage"
        if kind == "virtual":
            layout = h5py.VirtualLayout(shape=(len(ids),), dtype=ids.dtype)
            layout[:] = h5py.VirtualSource(str(seeds.h5), target, shape=(len(ids),))
            f.create_virtual_dataset(target, layout)
            return f"h5 {target} virtual"
        if kind == "group":
            f.create_group(target)
            return f"h5 {target} is a group"
        return f"h5 {target} missing"


# -- JSON mutators ---------------------------------------------------------------------------------------
def mutate_json(rng: random.Random, seed: str) -> tuple[bytes, str]:
    data = json.loads(seed)
    idx = data["idx_to_token"]
    kind = rng.choice(["deep", "bigint", "ids", "values", "surrogate", "t2i", "bytes", "top", "many", "numbers"])
    if kind == "deep":
        depth = rng.choice([100, 10_000, 200_000])
        where = rng.choice(["top", "value"])
        nest = "[" * depth + "]" * depth
        text = nest if where == "top" else json.dumps(data)[:-1] + f', "x": {nest}}}'
        return text.encode(), f"json nested {depth} deep ({where})"
    if kind == "bigint":
        digits = rng.choice([19, 400, 5000, 100_000])
        text = json.dumps(data).replace('"token_to_idx": {', '"token_to_idx": {"zz": ' + "9" * digits + ", ", 1)
        return text.encode(), f"json {digits}-digit integer"
    if kind == "numbers":
        return json.dumps(data).replace(": 1,", ": NaN,", 1).replace(": 2,", ": 1e999,", 1).encode(), "json NaN/inf"
    if kind == "ids":
        keys = list(idx)
        k = rng.choice(keys)
        new = rng.choice(["0", "-1", "1.5", "a", " 1", "1e3", "٣", "01", str(2 ** 40), str(len(keys) + 5), ""])
        idx[new] = idx.pop(k)
        return json.dumps(data).encode(), f"json id {k} -> {new!r}"
    if kind == "values":
        k = rng.choice(list(idx))
        idx[k] = rng.choice([1, None, [], {}, "ab", "", "[300]", "[12]", "[200]", True, 1.5])
        return json.dumps(data).encode(), f"json token {k} -> {idx[k]!r}"
    if kind == "surrogate":
        k = rng.choice(list(idx))
        text = json.dumps(data).replace(json.dumps(idx[k]), '"\\ud800"', 1)
        return text.encode(), "json lone surrogate token"
    if kind == "t2i":
        t2i = data.get("token_to_idx", {})
        if t2i:
            k = rng.choice(list(t2i))
            t2i[k] = rng.choice(["1", 1.0, True, [1], None, -1, 10 ** 30])
        return json.dumps(data).encode(), f"json token_to_idx mismatch"
    if kind == "top":
        return rng.choice([b"[]", b"1", b'"x"', b"null", b"{}", b'{"idx_to_token": []}', b"\xff\xfe",
                           b'{"idx_to_token": {}}']), "json top level"
    if kind == "many":
        n, dup = rng.choice([(3000, False), (300_000, True)])  # a valid large one, a duplicate-laden huge one
        big = {"idx_to_token": {str(i): chr(0x10000 + (i % 1000 if dup else i)) for i in range(1, n + 1)}}
        return json.dumps(big).encode(), f"json {n:,} tokens{' with duplicates' if dup else ''}"
    data2, what = flip_bytes(rng, seed.encode())
    return data2, f"json {what}"


# -- running one command ---------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int | None
    err: str
    seconds: float
    rss_mb: float
    timed_out: bool = False

    def verdict(self) -> str:
        lines = self.err.strip().splitlines()
        if self.timed_out:
            return "timeout"
        if self.code == 0:
            return "accepted"
        if self.code is None or self.code < 0:
            return "crash"
        if (self.code in (1, 2) and len(lines) == 1 and lines[0].startswith("charrnn: error:")
                and "out of memory" not in lines[0] and "Traceback" not in self.err):
            return "clean"
        if lines and "internal error" in lines[-1]:
            return "internal"
        if any("out of memory" in line for line in lines):
            return "oom"
        return "unclean"


def address_space() -> int | None:
    """This process's peak virtual size in bytes (Linux's VmPeak), or None where it cannot be read."""
    try:
        found = re.search(r"^VmPeak:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


def noop_address_space(spawn: bool) -> int | None:
    """What a run maps before it does anything: a fresh interpreter importing the commands (spawn),
    or this process, which forked children start as (its imports are done by then)."""
    if not spawn:
        return address_space()
    code = (f"import {', '.join(NOOP_IMPORTS)}, re; "
            "print(re.search(r'^VmPeak:\\s+(\\d+) kB', open('/proc/self/status').read(), re.M).group(1))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        return int(out.stdout.split()[-1]) * 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def memory_limit(spawn: bool) -> int | None:
    """RLIMIT_AS for each run: the no-op baseline plus the allowance (None: no baseline, no limit)."""
    baseline = noop_address_space(spawn)
    return None if baseline is None else baseline + MEMORY_ALLOWANCE


def _limit_memory(limit: int | None) -> None:
    if limit is not None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class Runner:
    """Runs ``charrnn ARGS`` in a child process; ``spawn`` starts a fresh interpreter, else a fork."""

    def __init__(self, work: Path, spawn: bool = False) -> None:
        self.work, self.spawn = work, spawn
        if not spawn:  # import once; children start with charrnn and torch loaded (no torch op runs here)
            sys.path.insert(0, str(ROOT))
            for module in NOOP_IMPORTS:
                importlib.import_module(module)
        self.memory_limit = memory_limit(spawn)

    def run(self, args: list[str], timeout: float = TIMEOUT) -> Outcome:
        err_path = self.work / "stderr.txt"
        start = time.perf_counter()
        with open(err_path, "wb") as err, open(os.devnull, "wb") as out:
            if self.spawn:
                proc = subprocess.Popen(charrnn_command(*args), stdout=out, stderr=err, cwd=self.work,
                                        preexec_fn=lambda: _limit_memory(self.memory_limit),
                                        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
                pid = proc.pid
            else:
                pid = os.fork()
                if pid == 0:  # the child
                    self._child(args, out.fileno(), err.fileno())
            status, usage, timed_out = self._wait(pid, timeout)
        code = os.waitstatus_to_exitcode(status) if status is not None else None
        return Outcome(code, err_path.read_text(errors="replace"), time.perf_counter() - start,
                       usage.ru_maxrss / 1024 if usage else 0.0, timed_out)

    def _child(self, args, out_fd: int, err_fd: int) -> None:
        code = 99
        try:
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            os.chdir(self.work)
            _limit_memory(self.memory_limit)
            from charrnn.cli import main
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)

    @staticmethod
    def _wait(pid: int, timeout: float):
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                return status, usage, False
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status, usage = os.wait4(pid, 0)
                return None, usage, True
            time.sleep(delay)
            delay = min(0.05, delay * 1.5)


# -- the campaign ----------------------------------------------------------------------------------------
@dataclass
class Stats:
    mutants: int = 0
    runs: int = 0
    verdicts: dict = field(default_factory=lambda: defaultdict(int))


def commands_for(fmt: str, mutant: Path, seeds: Seeds, out: Path) -> dict[str, list[str]]:
    h5, js = str(seeds.h5), str(seeds.json)
    if fmt in ("pt", "t7"):
        cmds = {"sample": ["sample", "--checkpoint", str(mutant), "--length", "20", "--seed", "1"],
                "eval": ["eval", "--checkpoint", str(mutant), "--input-h5", h5, "--batch-size", "2",
                         "--seq-length", "8"],
                "convert": ["convert", str(mutant), "-o", str(out / "converted")]}
        if fmt == "pt":
            cmds["resume"] = ["train", "--resume", str(mutant), "--input-h5", h5, "--input-json", js, "--max-iters",
                              "3", "--checkpoint-every", "0", "--print-every", "0", "--quiet"]
        return cmds
    if fmt == "h5":
        return {"eval": ["eval", "--checkpoint", str(seeds.pt), "--input-h5", str(mutant), "--batch-size", "2",
                         "--seq-length", "8"],
                "train": ["train", "--input-h5", str(mutant), "--input-json", js, *TINY, "--max-iters", "2",
                          "--checkpoint-every", "0", "--checkpoint-name", str(out / "t"), "--quiet"]}
    return {"train": ["train", "--input-h5", h5, "--input-json", str(mutant), *TINY, "--max-iters", "2",
                      "--checkpoint-every", "0", "--checkpoint-name", str(out / "t"), "--quiet"],
            "eval": ["eval", "--checkpoint", str(seeds.pt), "--input-h5", h5, "--input-json", str(mutant),
                     "--batch-size", "2", "--seq-length", "8"],
            "preprocess": ["preprocess", "--input-txt", str(seeds.corpus), "--input-json", str(mutant),
                           "--output-h5", str(out / "p.h5"), "--output-json", str(out / "p.json"), "--quiet"]}


def make_mutant(fmt: str, rng: random.Random, seeds: Seeds, slot: Path) -> tuple[Path, str]:
    """Write one mutant of ``fmt`` into ``slot`` (a fresh directory); return its path and description."""
    if fmt == "pt":
        data, what = mutate_pt(rng, seeds.pt.read_bytes())
        path = slot / "m_2.pt"
    elif fmt == "t7":
        data, what = mutate_t7(rng)
        path = slot / "m_7.t7"
    elif fmt == "h5":
        path = slot / "m.h5"
        return path, mutate_h5(rng, seeds, path)
    else:
        data, what = mutate_json(rng, seeds.json.read_text())
        path = slot / "m.json"
    path.write_bytes(data)
    return path, what


def campaign(seconds: float, seed: int, out: Path, spawn: bool = False, max_mutants: int | None = None,
             formats=("pt", "t7", "h5", "json"), log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="charrnn-fuzz-"))
    try:
        seeds = make_seeds(work)
        runner = Runner(work, spawn)
        rng = random.Random(seed)
        stats = {fmt: Stats() for fmt in formats}
        worst: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "rss_mb": 0.0})
        failures = []
        start, n = time.monotonic(), 0
        while time.monotonic() - start < seconds and (max_mutants is None or n < max_mutants * len(formats)):
            fmt = formats[n % len(formats)]
            n += 1
            slot = work / f"mutant-{n}"
            slot.mkdir()
            try:
                mutant, what = make_mutant(fmt, rng, seeds, slot)
            except Exception as exc:  # a mutator that could not apply: try another
                what = f"(mutator error {type(exc).__name__}: {exc})"
                shutil.rmtree(slot)
                continue
            stats[fmt].mutants += 1
            size = mutant.stat().st_size if mutant.exists() else 0
            for name, args in commands_for(fmt, mutant, seeds, slot).items():
                outcome = runner.run(args)
                verdict = outcome.verdict()
                stats[fmt].runs += 1
                stats[fmt].verdicts[verdict] += 1
                if size < 10 << 20:
                    w = worst[f"{name} ({'accepted' if verdict == 'accepted' else 'refused'})"]
                    w["seconds"] = max(w["seconds"], outcome.seconds)
                    w["rss_mb"] = max(w["rss_mb"], outcome.rss_mb)
                if verdict not in ("clean", "accepted"):
                    kept = out / f"failure-{len(failures) + 1}{mutant.suffix}"
                    shutil.copy(mutant, kept)
                    failures.append({"format": fmt, "mutation": what, "command": name, "verdict": verdict,
                                     "file": str(kept), "args": args, "stderr": outcome.err.strip()[-600:]})
                    log(f"FAILURE {fmt} {name} [{verdict}] {what}: {outcome.err.strip().splitlines()[-1:]}")
            shutil.rmtree(slot, ignore_errors=True)
        report = {"seed": seed, "seconds": round(time.monotonic() - start, 1), "mode": "spawn" if spawn else "fork",
                  "memory_limit_gb": runner.memory_limit and round(runner.memory_limit / 2 ** 30, 2),
                  "memory_allowance_gb": MEMORY_ALLOWANCE / 2 ** 30,
                  "formats": {fmt: {"mutants": s.mutants, "runs": s.runs, "clean": s.verdicts.get("clean", 0),
                                    "accepted": s.verdicts.get("accepted", 0),
                                    "failures": s.runs - s.verdicts.get("clean", 0) - s.verdicts.get("accepted", 0),
                                    "verdicts": dict(s.verdicts)} for fmt, s in stats.items()},
                  "worst_per_command": {k: {"seconds": round(v["seconds"], 2), "rss_mb": round(v["rss_mb"])}
                                        for k, v in worst.items()},
                  "failures": failures}
        (out / "report.json").write_text(json.dumps(report, indent=1))
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_report(report: dict) -> None:
    print(f"\nfuzzed {report['seconds']} s (seed {report['seed']}, {report['mode']} mode, "
          f"RLIMIT_AS {report['memory_limit_gb'] or 'none'} GB: a no-op run plus {report['memory_allowance_gb']:g})")
    print(f"{'format':8}{'mutants':>9}{'runs':>7}{'clean':>8}{'accepted':>10}{'failures':>10}")
    for fmt, s in report["formats"].items():
        print(f"{fmt:8}{s['mutants']:>9}{s['runs']:>7}{s['clean']:>8}{s['accepted']:>10}{s['failures']:>10}")
    print("\nslowest run and largest resident memory per command and outcome (files under 10 MB):")
    for name, w in sorted(report["worst_per_command"].items()):
        print(f"  {name:22} {w['seconds']:6.2f} s  {w['rss_mb']:6.0f} MB")
    for f in report["failures"][:20]:
        print(f"FAILURE {f['format']} {f['command']} [{f['verdict']}] {f['mutation']}\n  {f['file']}: "
              f"charrnn {' '.join(f['args'])}\n  {f['stderr'][-300:]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mutants", type=int, help="stop after this many mutants per format")
    parser.add_argument("--formats", default="pt,t7,h5,json")
    parser.add_argument("--out", default="fuzz-out", help="where failing mutants and report.json go")
    parser.add_argument("--spawn", action="store_true", help="a fresh interpreter per run (slower; real start-up)")
    args = parser.parse_args(argv)
    report = campaign(args.minutes * 60, args.seed, Path(args.out), args.spawn, args.mutants,
                      tuple(args.formats.split(",")))
    print_report(report)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
