"""The corpus machinery behind ``charrnn preprocess``: chunked readers, token ids, splits, HDF5 writing.

The corpus is read twice in chunks: the first pass counts the tokens (which fixes the split
sizes), the second maps each chunk to ids with lookup tables and writes it straight into the
train/val/test datasets. Ids go to tokens in order of first appearance as the second pass meets
them, which is torch-rnn's order. UTF-8 is mapped from its raw bytes with NumPy
(:mod:`charrnn.utf8`), so counting it is nearly free; other codecs go through Python's
incremental decoder, which keeps multi-byte characters whole across chunk boundaries.
Character tokens (:mod:`charrnn.preprocessing`) and word tokens (:mod:`charrnn.token_preprocessing`)
both build on it.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import utf8
from .errors import CharRNNError, Conflict, InvalidInput, opt
from .fileio import atomic_path, check_readable_file
from .vocab import Vocabulary

CHUNK_BYTES = 1 << 20  # 4 MiB of input per chunk
_ASCII_COMPATIBLE = {"utf-8", "ascii", "iso8859-1", "cp1252"}


@dataclass(frozen=True)
class SplitSizes:
    train: int
    val: int
    test: int

    @classmethod
    def for_total(cls, total: int, val_frac: float, test_frac: float) -> "SplitSizes":
        """torch-rnn's rule: val and test are ``int(frac * N)``, train gets the rest."""
        val, test = int(val_frac * total), int(test_frac * total)
        return cls(total - val - test, val, test)


@dataclass(frozen=True)
class PreprocessResult:
    output_h5: Path
    output_json: Path
    vocab: Vocabulary
    sizes: SplitSizes
    input_bytes: int


def check_fractions(val_frac: float, test_frac: float) -> None:
    for name, value in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0 <= value < 1:
            raise InvalidInput(name, f"must lie in [0, 1) (got {value})")
    if val_frac + test_frac >= 1:
        raise Conflict(("val_frac", "test_frac"), f"must sum to below 1 (got {val_frac + test_frac:g}), "
                                                  "or nothing is left to train on")


def _check_encoding(encoding: str) -> None:
    if encoding == "bytes":
        return
    try:
        codecs.getincrementaldecoder(encoding)
    except LookupError:
        raise InvalidInput("encoding", f"{encoding!r} is an unknown encoding (use a Python codec name such as utf-8 "
                                       "or latin-1, or 'bytes')") from None


def _not_valid(path: Path, encoding: str, where: int, reason: str) -> CharRNNError:
    return CharRNNError(f"{path}: not valid {encoding} at byte {max(where, 0)} ({reason}); "
                        f"pass the right {opt('encoding')}, or {opt('encoding')} bytes to model raw bytes")


def _as_bytes(points: np.ndarray) -> bytes | bytearray:
    """The bytes behind a uint8 array, without a copy when it was made from bytes."""
    base = points.base
    return base if isinstance(base, (bytes, bytearray)) and len(base) == points.nbytes else points.tobytes()


def _new_tokens_in_order(points: np.ndarray, seen: np.ndarray) -> list[tuple[int, int]]:
    """(first index, token) of the tokens of ``points`` not yet ``seen``, in order; marks them seen."""
    # code points: the unseen ones and where each first appears; bytes: 1. which are unseen (usually none)
    if points.dtype != np.uint8:
        unseen = np.flatnonzero(seen[points] == 0)
        if len(unseen) == 0:
            return []
        tokens, first = utf8.first_of_each(points[unseen], unseen)
        seen[tokens] = 1
        return list(zip(first.tolist(), tokens.tolist()))
    known = np.flatnonzero(seen[:256]).astype(np.uint8).tobytes()  # bytes.translate deletes them at memory speed
    missing = np.unique(np.frombuffer(_as_bytes(points).translate(None, known), dtype=np.uint8))
    if len(missing) == 0:
        return []
    found: list[tuple[int, int]] = []

    def record(values: np.ndarray, first: np.ndarray) -> None:
        new = seen[values] == 0
        found.extend(zip(first[new].tolist(), values[new].tolist()))
        seen[values[new]] = 1

    # 2. where each first appears: most characters first appear early, so look at the head first
    record(*np.unique(points[:1 << 16], return_index=True))
    missing = missing[seen[missing] == 0]
    if len(missing) > 16:
        record(*np.unique(points, return_index=True))
    else:
        for value in missing.tolist():
            found.append((int(np.argmax(points == value)), value))
            seen[value] = 1
    return sorted(found)


class _TooManyTokens(Exception):
    """More tokens than the id tables' dtype holds: start again with wider tables."""


class _NeedsDecoding(Exception):
    """Lowercasing this text needs context (Greek capital sigma) or changes its length ('İ')."""


class TokenIds:
    """Token ids handed out as tokens first appear (torch-rnn's order), or fixed by a known vocabulary.

    Tokens outside the vocabulary (any new token with a known vocabulary; with ``train_size``, a
    token first seen after the training split) are collected in ``unknown`` and take the id of
    ``unknown_char`` (a placeholder while there is none: the caller reports them all at the end).
    """

    def __init__(self, known: Vocabulary | None, train_size: int | None, unknown_char: str | None,
                 byte_mode: bool, largest: int) -> None:
        self.tokens: list[int] = list(known.tokens) if known else []
        self.unknown: list[int] = []
        self._ids = {token: i for i, token in enumerate(self.tokens, 1)}
        self._closed = known is not None
        self._train_size, self._unknown_char = train_size, unknown_char
        self._byte_mode, self._largest = byte_mode, largest
        self._unknown_id: int | None = None

    @property
    def counts_positions(self) -> bool:
        """Whether :meth:`id` needs the true index of a token's first appearance."""
        return self._train_size is not None and not self._closed

    def vocabulary(self) -> Vocabulary:
        return Vocabulary(tuple(self.tokens), self._byte_mode)

    def id(self, token: int, index: int) -> int:
        """The id of ``token``, first seen at token ``index``."""
        found = self._ids.get(token)
        if found is None:
            if self._closed or (self._train_size is not None and index >= self._train_size):
                self._closed = True
                self.unknown.append(token)
                found = self._ids[token] = self._id_for_unknown()
            else:
                if len(self.tokens) == self._largest:
                    raise _TooManyTokens
                self.tokens.append(token)
                found = self._ids[token] = len(self.tokens)
        return found

    def _id_for_unknown(self) -> int:
        if self._unknown_id is None:
            if self._unknown_char is None:
                return 1
            if len(self._unknown_char) != 1:
                raise InvalidInput("unknown_char", "must be a single character")
            self._unknown_id = int(self.vocabulary().encode(self._unknown_char)[0])
        return self._unknown_id


class DecodedText:
    """A corpus in any codec through Python's incremental decoder (which keeps multi-byte
    characters whole across chunks), or as raw bytes."""

    def __init__(self, path: Path, encoding: str, lowercase: bool, chunk_bytes: int) -> None:
        self.path, self.encoding, self.lowercase, self.chunk_bytes = path, encoding, lowercase, chunk_bytes
        self.byte_mode = encoding == "bytes"

    def chunks(self) -> Iterator[np.ndarray]:
        """The corpus as arrays of code points (or byte values in ``bytes`` mode)."""
        lowercase = self.lowercase
        decoder = None if self.byte_mode else codecs.getincrementaldecoder(self.encoding)("strict")
        ascii_compatible = not self.byte_mode and codecs.lookup(self.encoding).name in _ASCII_COMPATIBLE
        offset = 0
        with open(self.path, "rb") as f:
            while True:
                block = f.read(self.chunk_bytes)
                final = not block
                if decoder is None:
                    if final:
                        return
                    yield np.frombuffer(block.lower() if lowercase else block, dtype=np.uint8)
                elif block and ascii_compatible and block.isascii() and not decoder.getstate()[0]:
                    # ASCII bytes are their own code points: skip decoding and re-encoding
                    yield np.frombuffer(block.lower() if lowercase else block, dtype=np.uint8)
                else:
                    try:
                        text = decoder.decode(block, final=final)
                    except UnicodeDecodeError as exc:
                        # exc.start counts from the bytes the decoder held back from the last block.
                        where = offset - len(decoder.getstate()[0]) + exc.start
                        raise _not_valid(self.path, self.encoding, where, exc.reason) from None
                    if lowercase:
                        text = text.lower()
                    if text:
                        yield _to_code_points(text)
                if final:
                    return
                offset += len(block)

    def count(self) -> int:
        return sum(len(points) for points in self.chunks())

    def encode(self, ids: TokenIds, table_dtype: type) -> Iterator[np.ndarray]:
        """The corpus as token ids, learning each new token's id as it first appears."""
        size = 256 if self.byte_mode else utf8.MAX_CODE_POINT
        lookup, seen = np.zeros(size, dtype=table_dtype), np.zeros(size, dtype=np.uint8)
        total = 0
        for points in self.chunks():
            for index, token in _new_tokens_in_order(points, seen):
                lookup[token] = ids.id(token, total + index)
            if lookup.dtype == np.uint8 and points.dtype == np.uint8:  # translate at memory speed
                yield np.frombuffer(_as_bytes(points).translate(lookup[:256].tobytes()), dtype=np.uint8)
            else:
                yield lookup[points]
            total += len(points)


def _to_code_points(text: str) -> np.ndarray:
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class Utf8Text:
    """A UTF-8 corpus mapped from its raw bytes with NumPy (:mod:`charrnn.utf8`), never decoded
    to a str. Lowercasing maps each character through ``str.lower`` once, in the tables; text
    whose lowercase depends on context (Greek capital sigma) or changes length ('İ') needs
    :class:`DecodedText` instead."""

    def __init__(self, path: Path, encoding: str, lowercase: bool, chunk_bytes: int) -> None:
        self.path, self.encoding, self.lowercase, self.chunk_bytes = path, encoding, lowercase, chunk_bytes

    def _chunks(self) -> Iterator[tuple[int, bytearray | bytes, int]]:
        """(file offset, data, n) per chunk: ``data[:n]`` holds whole characters; a character cut
        by the end of a read is carried into the next chunk. ``data`` is one buffer, refilled
        for each chunk (fresh memory for every read costs page faults)."""
        size = max(self.chunk_bytes, 4)
        buf = bytearray(size)
        view = memoryview(buf)
        carry, offset = 0, 0
        with open(self.path, "rb") as f:
            while True:
                got = f.readinto(view[carry:])
                length = carry + got
                if length == 0:
                    return
                data = buf if length == size else bytes(view[:length])
                n = utf8.whole_prefix(data) if got else length
                yield offset, data, n
                carry, offset = length - n, offset + n
                view[:carry] = bytes(view[n:length])

    def _scan(self, scanner: utf8.Scanner, offset: int, data: bytes, n: int, learn: utf8.Learn) -> np.ndarray:
        try:
            return scanner.scan(data, 0, n, learn)
        except utf8.InvalidUtf8:
            try:  # let Python's codec name the first bad byte and the reason
                codecs.utf_8_decode(data[:n], "strict", True)
            except UnicodeDecodeError as exc:
                raise _not_valid(self.path, self.encoding, offset + exc.start, exc.reason) from None
            raise _not_valid(self.path, self.encoding, offset, "invalid data") from None

    def _decode(self, offset: int, data: bytes | bytearray, n: int) -> np.ndarray:
        try:
            return _to_code_points(codecs.utf_8_decode(data[:n], "strict", True)[0])
        except UnicodeDecodeError as exc:
            raise _not_valid(self.path, self.encoding, offset + exc.start, exc.reason) from None

    def count(self) -> int:
        """Characters in the corpus, counted as the bytes that are not continuation bytes
        (:meth:`encode` checks that the bytes are valid UTF-8)."""
        return sum(n if data.isascii() else utf8.count(data, 0, n) for _, data, n in self._chunks())

    def encode(self, ids: TokenIds, table_dtype: type) -> Iterator[np.ndarray]:
        """The corpus as token ids, learning each new token's id as it first appears."""
        table = utf8.Table(table_dtype)
        scanner = utf8.Scanner(table)
        seen = np.zeros(utf8.MAX_CODE_POINT, dtype=np.uint8)  # the characters in the table

        def learn(tokens: list[int], indices: list[int]) -> None:
            if self.lowercase and any(t == 0x3A3 or len(chr(t).lower()) != 1 for t in tokens):
                raise _NeedsDecoding
            as_token = (lambda t: ord(chr(t).lower())) if self.lowercase else (lambda t: t)  # noqa: E731
            table.set(tokens, [ids.id(as_token(t), i) for t, i in zip(tokens, indices)])
            seen[tokens] = 1

        total = 0
        for offset, data, n in self._chunks():
            ascii_only = data.isascii()
            if ascii_only or utf8.mostly_long_characters(data, n):
                # ASCII bytes are their own code points; CJK and the like decode faster through Python
                points = np.frombuffer(data, dtype=np.uint8) if ascii_only else self._decode(offset, data, n)
                new = _new_tokens_in_order(points, seen)
                if new:
                    learn([t for _, t in new], [total + i for i, _ in new])
                if ascii_only and table_dtype == np.uint8:  # translate at memory speed
                    yield np.frombuffer(data.translate(table.by_code_point[:256].tobytes()), dtype=np.uint8)
                else:
                    yield table.by_code_point[points]
                total += len(points)
                continue

            def learn_bytes(points: np.ndarray, where: np.ndarray, starts: np.ndarray, base: int = total) -> None:
                learn(points.tolist(), (base + _starts_before(starts, where)).tolist() if ids.counts_positions
                      else [base] * len(points))

            values = self._scan(scanner, offset, data, n, learn_bytes)
            total += len(values)
            yield values


def _starts_before(starts: np.ndarray, where: np.ndarray) -> np.ndarray:
    """How many of ``starts`` are True before each of the (sorted) offsets ``where``."""
    before = np.empty(len(where), dtype=np.int64)
    done, counted = 0, 0
    for i, offset in enumerate(where.tolist()):
        counted += int(np.count_nonzero(starts[done:offset]))
        before[i], done = counted, offset
    return before


def corpus_reader(path: Path, encoding: str, lowercase: bool, chunk_bytes: int = CHUNK_BYTES) -> DecodedText | Utf8Text:
    """The fastest reader for ``encoding``: UTF-8 from its bytes, anything else through Python's codecs."""
    if encoding != "bytes" and codecs.lookup(encoding).name == "utf-8":
        return Utf8Text(path, encoding, lowercase, chunk_bytes)
    return DecodedText(path, encoding, lowercase, chunk_bytes)


def _describe(tokens: list[int], byte_mode: bool) -> str:
    shown = ", ".join(f"byte {t}" if byte_mode and t > 127 else repr(chr(t)) for t in tokens[:10])
    return shown + (f" and {len(tokens) - 10} more" if len(tokens) > 10 else "")


def _check_corpus(path: Path, vocab: Vocabulary, total: int) -> None:
    if total == 0:
        raise CharRNNError(f"{path}: the corpus is empty")
    if len(vocab) == 1:
        raise CharRNNError(f"{path}: the corpus is one character repeated; there is nothing to learn")
    if not vocab.byte_mode and 0 in vocab.tokens:
        raise CharRNNError(f"{path}: contains NUL characters, so it looks binary; "
                           f"use {opt('encoding')} bytes to model raw bytes")


DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32}
DTYPE_CHOICES = "must be auto, uint8, uint16 or uint32 (got {!r})"


def _id_dtype(vocab: Vocabulary, dtype: str) -> np.dtype:
    if dtype == "auto":
        return vocab.id_dtype
    if dtype not in DTYPES:
        raise InvalidInput("dtype", DTYPE_CHOICES.format(dtype))
    chosen = np.dtype(DTYPES[dtype])
    if len(vocab) > np.iinfo(chosen).max:
        raise InvalidInput("dtype", f"{dtype} holds at most {np.iinfo(chosen).max} tokens; the vocabulary has {len(vocab)}")
    return chosen


def _known_vocabulary(input_json, byte_mode: bool) -> Vocabulary:
    vocab = Vocabulary.load(input_json)
    if vocab.byte_mode and not byte_mode:
        raise InvalidInput("encoding", f"must be bytes: {input_json} is a byte vocabulary")
    if byte_mode and not vocab.byte_mode and max(vocab.tokens) > 127:
        raise InvalidInput("encoding", f"cannot be bytes: {input_json} is a character vocabulary")
    return Vocabulary(vocab.tokens, byte_mode or vocab.byte_mode)


def _write_splits(path: Path, chunks: Iterator[np.ndarray], sizes: SplitSizes, dtype: np.dtype,
                  compression: str | None) -> int:
    """Write the ids of ``chunks`` into the train, val and test datasets of a new HDF5 file; the
    number of ids."""
    import h5py

    bounds = {"train": (0, sizes.train), "val": (sizes.train, sizes.train + sizes.val),
              "test": (sizes.train + sizes.val, sizes.train + sizes.val + sizes.test)}
    with h5py.File(path, "w") as f:
        datasets = {name: f.create_dataset(name, shape=(hi - lo,), dtype=dtype,
                                           chunks=True if compression and hi > lo else None,
                                           compression=compression if hi > lo else None)
                    for name, (lo, hi) in bounds.items()}
        pos = 0
        for chunk in chunks:
            chunk = chunk.astype(dtype, copy=False)
            end = pos + len(chunk)
            for name, (lo, hi) in bounds.items():
                a, b = max(lo, pos), min(hi, end)
                if a < b:
                    datasets[name][a - lo:b - lo] = chunk[a - pos:b - pos]
            pos = end
    return pos


