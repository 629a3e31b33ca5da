"""Turn a text corpus into torch-rnn's HDF5 + JSON files, vectorised and in bounded memory.

The corpus is read twice in chunks: the first pass finds the tokens in order of first
appearance (and where each first appears) and counts them, the second maps each chunk to ids
with lookup tables and writes it straight into the train/val/test datasets. UTF-8 is mapped
from its raw bytes with NumPy (:mod:`charrnn.utf8`); other codecs go through Python's
incremental decoder, which keeps multi-byte characters whole across chunk boundaries.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import utf8
from .errors import CharRNNError
from .fileio import atomic_path, check_readable_file
from .vocab import Vocabulary

CHUNK_BYTES = 1 << 24  # 16 MiB of input per chunk
BLOCK_BYTES = 1 << 18  # UTF-8 is mapped in blocks that stay in the core's cache
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
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1):
        raise CharRNNError(f"--val-frac and --test-frac must lie in [0, 1) (got {val_frac}, {test_frac})")
    if val_frac + test_frac >= 1:
        raise CharRNNError(f"--val-frac + --test-frac must be below 1 (got {val_frac + test_frac:g}), or nothing is left to train on")


def _check_encoding(encoding: str) -> None:
    if encoding == "bytes":
        return
    try:
        codecs.getincrementaldecoder(encoding)
    except LookupError:
        raise CharRNNError(f"unknown encoding {encoding!r} (use a Python codec name such as utf-8 or latin-1, or 'bytes')") from None


def _not_valid(path: Path, encoding: str, where: int, reason: str) -> CharRNNError:
    return CharRNNError(f"{path}: not valid {encoding} at byte {max(where, 0)} ({reason}); "
                        "pass the right --encoding, or --encoding bytes to model raw bytes")


def _as_bytes(points: np.ndarray) -> bytes:
    """The bytes behind a uint8 array, without a copy when it was made from bytes."""
    base = points.base
    return base if isinstance(base, bytes) and len(base) == points.nbytes else points.tobytes()


def _new_tokens_in_order(points: np.ndarray, seen: np.ndarray) -> list[tuple[int, int]]:
    """(first index, token) of the tokens of ``points`` not yet ``seen``, in order; marks them seen."""
    found: list[tuple[int, int]] = []

    def record(values: np.ndarray, first: np.ndarray) -> None:
        new = seen[values] == 0
        found.extend(zip(first[new].tolist(), values[new].tolist()))
        seen[values[new]] = 1

    # 1. most characters first appear early: look at the head of the chunk
    record(*np.unique(points[:1 << 16], return_index=True))
    # 2. whatever else is still unseen anywhere in the chunk
    if points.dtype == np.uint8:  # bytes.translate deletes the seen bytes at memory speed
        known = np.flatnonzero(seen[:256]).astype(np.uint8).tobytes()
        missing = np.unique(np.frombuffer(_as_bytes(points).translate(None, known), dtype=np.uint8))
    else:
        present = np.flatnonzero(np.bincount(points))
        missing = present[seen[present] == 0]
    # 3. where each of those first appears
    if len(missing) > 16:
        record(*np.unique(points, return_index=True))
    else:
        for value in missing.tolist():
            found.append((int(np.argmax(points == value)), value))
            seen[value] = 1
    return sorted(found)


@dataclass(frozen=True)
class Scan:
    """The first pass: tokens in order of first appearance, the token index where each first
    appears, and the token count."""

    tokens: list[int]
    first: list[int]
    total: int


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

    def scan(self) -> Scan:
        seen = np.zeros(256 if self.byte_mode else utf8.MAX_CODE_POINT, dtype=np.uint8)
        tokens, first, total = [], [], 0
        for points in self.chunks():
            for index, token in _new_tokens_in_order(points, seen):
                tokens.append(token)
                first.append(total + index)
            total += len(points)
        return Scan(tokens, first, total)

    def encode(self, ids: dict[int, int], dtype: np.dtype) -> Iterator[np.ndarray]:
        """The corpus as token ids (``ids`` maps every token of the scan)."""
        lookup = np.zeros(max(256, max(ids) + 1), dtype=dtype)
        lookup[list(ids)] = list(ids.values())
        byte_table = lookup[:256].tobytes() if lookup.dtype == np.uint8 else None
        for points in self.chunks():
            if byte_table is not None and points.dtype == np.uint8:  # translate at memory speed
                yield np.frombuffer(_as_bytes(points).translate(byte_table), dtype=np.uint8)
            else:
                yield lookup[points]


def _to_code_points(text: str) -> np.ndarray:
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class Utf8Text:
    """A UTF-8 corpus mapped from its raw bytes with NumPy (:mod:`charrnn.utf8`), never decoded
    to a str. Lowercasing maps each character through ``str.lower`` once, in the tables; text
    whose lowercase depends on context (Greek capital sigma) or changes its length ('İ') goes
    through :class:`DecodedText` instead."""

    def __init__(self, path: Path, encoding: str, lowercase: bool, chunk_bytes: int) -> None:
        self.path, self.encoding, self.lowercase, self.chunk_bytes = path, encoding, lowercase, chunk_bytes
        self.read_as: list[int] = []  # the scan's tokens before lowercasing
        self.fallback: DecodedText | None = None

    def _chunks(self) -> Iterator[tuple[int, bytes, int]]:
        """(file offset, data, n) per chunk: ``data[:n]`` holds whole characters; a character cut
        by the end of a read is carried into the next chunk."""
        carry, offset = b"", 0
        with open(self.path, "rb") as f:
            while True:
                block = f.read(self.chunk_bytes)
                data = carry + block if carry else block
                if not data:
                    return
                n = utf8.whole_prefix(data) if block else len(data)
                yield offset, data, n
                carry, offset = data[n:], offset + n

    def _blocks(self, table: utf8.Table, offset: int, data: bytes, n: int) -> Iterator[utf8.Block]:
        buf = np.frombuffer(data, dtype=np.uint8)
        try:
            for lo, hi in utf8.block_bounds(buf, n, BLOCK_BYTES):
                if hi + utf8.PADDING > len(buf):  # the last block: give it room to look ahead
                    yield utf8.scan(table, np.concatenate([buf[lo:hi], np.zeros(utf8.PADDING, np.uint8)]), 0, hi - lo)
                else:
                    yield utf8.scan(table, buf, lo, hi)
        except utf8.InvalidUtf8:
            try:  # let Python's codec name the first bad byte and the reason
                codecs.utf_8_decode(data[:n], "strict", True)
            except UnicodeDecodeError as exc:
                raise _not_valid(self.path, self.encoding, offset + exc.start, exc.reason) from None
            raise _not_valid(self.path, self.encoding, offset, "invalid data") from None

    def scan(self) -> Scan:
        seen = utf8.Table(np.uint8)
        found: list[tuple[int, int]] = []  # (token index, token as read)
        total = 0
        for offset, data, n in self._chunks():
            if data.isascii():
                new = _new_tokens_in_order(np.frombuffer(data, dtype=np.uint8), seen.by_code_point)
                found += [(total + index, token) for index, token in new]
                seen.set([token for _, token in new], 1)
                total += n
                continue
            for block in self._blocks(seen, offset, data, n):
                missing = block.missing()
                if missing.any():
                    new, where = _first_of_each(block.code_points[missing], block.decoded[missing])
                    index = np.searchsorted(np.flatnonzero(block.starts), where)
                    found += zip((total + index).tolist(), new.tolist())
                    seen.set(new, 1)
                total += block.count
        self.read_as = [token for _, token in found]
        if not self.lowercase:
            return Scan(self.read_as, [index for index, _ in found], total)
        if any(t == 0x3A3 or len(chr(t).lower()) != 1 for t in self.read_as):
            self.fallback = DecodedText(self.path, self.encoding, self.lowercase, self.chunk_bytes)
            return self.fallback.scan()
        lowered: dict[int, int] = {}
        for index, token in found:
            lowered.setdefault(ord(chr(token).lower()), index)
        return Scan(list(lowered), list(lowered.values()), total)

    def encode(self, ids: dict[int, int], dtype: np.dtype) -> Iterator[np.ndarray]:
        """The corpus as token ids (``ids`` maps every token of the scan, which must come first)."""
        if self.fallback is not None:
            yield from self.fallback.encode(ids, dtype)
            return
        small = max(ids.values()) <= 255
        table = utf8.Table(np.uint8 if small else np.uint32)
        as_token = (lambda t: ord(chr(t).lower())) if self.lowercase else (lambda t: t)  # noqa: E731
        table.set(self.read_as, [ids[as_token(t)] for t in self.read_as])
        byte_table = table.by_code_point[:256].tobytes()
        for offset, data, n in self._chunks():
            if data.isascii() and small:
                yield np.frombuffer(data.translate(byte_table), dtype=np.uint8).astype(dtype, copy=False)
                continue
            parts = []
            for block in self._blocks(table, offset, data, n):
                if block.missing().any():
                    raise CharRNNError(f"{self.path} changed while it was being read")
                parts.append(block.character_values())
            yield np.concatenate(parts).astype(dtype, copy=False)


def _first_of_each(tokens: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``tokens`` in order of first appearance, and where each first appears."""
    values, first = np.unique(tokens, return_index=True)
    order = np.argsort(first)
    return values[order], where[first[order]]


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
        raise CharRNNError(f"{path}: contains NUL characters, so it looks binary; use --encoding bytes to model raw bytes")


DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32}


def _id_dtype(vocab: Vocabulary, dtype: str) -> np.dtype:
    if dtype == "auto":
        return vocab.id_dtype
    if dtype not in DTYPES:
        raise CharRNNError(f"unknown --dtype {dtype!r} (auto, uint8, uint16 or uint32)")
    chosen = np.dtype(DTYPES[dtype])
    if len(vocab) > np.iinfo(chosen).max:
        raise CharRNNError(f"--dtype {dtype} holds at most {np.iinfo(chosen).max} tokens; the vocabulary has {len(vocab)}")
    return chosen


def _known_vocabulary(input_json, byte_mode: bool) -> Vocabulary:
    vocab = Vocabulary.load(input_json)
    if vocab.byte_mode and not byte_mode:
        raise CharRNNError(f"{input_json} is a byte vocabulary: add --encoding bytes")
    if byte_mode and not vocab.byte_mode and max(vocab.tokens) > 127:
        raise CharRNNError(f"{input_json} is a character vocabulary: drop --encoding bytes")
    return Vocabulary(vocab.tokens, byte_mode or vocab.byte_mode)


def _vocabulary(scan: Scan, byte_mode: bool, known: Vocabulary | None, vocab_from: str,
                val_frac: float, test_frac: float) -> tuple[Vocabulary, list[int]]:
    """The vocabulary to encode with and the corpus tokens outside it."""
    if known is not None:
        inside = set(known.tokens)
        return known, [t for t in scan.tokens if t not in inside]
    if vocab_from == "train":
        train_size = SplitSizes.for_total(scan.total, val_frac, test_frac).train
        in_train = [t for t, first in zip(scan.tokens, scan.first) if first < train_size]
        return Vocabulary(tuple(in_train), byte_mode), scan.tokens[len(in_train):]
    return Vocabulary(tuple(scan.tokens), byte_mode), []


def preprocess(input_txt: str | os.PathLike, output_h5: str | os.PathLike | None = None,
               output_json: str | os.PathLike | None = None, val_frac: float = 0.1,
               test_frac: float = 0.1, encoding: str = "utf-8", lowercase: bool = False,
               log: Callable[[str], None] | None = None, chunk_bytes: int = CHUNK_BYTES,
               input_json: str | os.PathLike | None = None, unknown_char: str | None = None,
               vocab_from: str = "all", dtype: str = "auto", compression: str | None = None) -> PreprocessResult:
    """Write ``input_txt`` as torch-rnn's HDF5 (``/train``, ``/val``, ``/test``) and JSON files.

    Outputs default to the input's path with ``.h5`` and ``.json``. Nothing is written
    unless the whole job succeeds; existing outputs are replaced atomically. The corpus is
    read in chunks, twice, so memory does not grow with its size.

    ``input_json`` encodes with an existing vocabulary (to fine-tune a model on new text);
    ``vocab_from="train"`` builds the vocabulary from the training split only. Characters
    outside the vocabulary are an error unless ``unknown_char`` names a token to map them to.
    ``dtype`` overrides torch-rnn's uint8/uint32 choice (``uint16`` halves the file for
    256..65535 tokens); ``compression`` is ``gzip`` or ``lzf`` (chunked datasets).
    """
    import h5py

    path = check_readable_file(input_txt, "input text")
    check_fractions(val_frac, test_frac)
    _check_encoding(encoding)
    if compression not in (None, "gzip", "lzf"):
        raise CharRNNError(f"unknown --compression {compression!r} (gzip or lzf)")
    output_h5 = Path(output_h5) if output_h5 else path.with_suffix(".h5")
    output_json = Path(output_json) if output_json else path.with_suffix(".json")
    if path.resolve() in (output_h5.resolve(), output_json.resolve()):
        raise CharRNNError(f"output would overwrite the input {path}")

    if vocab_from not in ("all", "train"):
        raise CharRNNError(f"--vocab-from must be 'all' or 'train' (got {vocab_from!r})")
    known = _known_vocabulary(input_json, encoding == "bytes") if input_json else None
    reader = corpus_reader(path, encoding, lowercase, chunk_bytes)
    scan = reader.scan()
    vocab, unknown = _vocabulary(scan, encoding == "bytes", known, vocab_from, val_frac, test_frac)
    total = scan.total
    if not input_json:
        _check_corpus(path, vocab, total)
    elif total == 0:
        raise CharRNNError(f"{path}: the corpus is empty")
    id_dtype = _id_dtype(vocab, dtype)
    sizes = SplitSizes.for_total(total, val_frac, test_frac)

    ids = {token: i for i, token in enumerate(vocab.tokens, 1)}
    if unknown:
        if unknown_char is None:
            raise CharRNNError(f"{path}: character(s) not in the vocabulary: {_describe(unknown, vocab.byte_mode)} "
                               "(pass --unknown-char C to map them to a character C of the vocabulary)")
        if len(unknown_char) != 1:
            raise CharRNNError("--unknown-char must be a single character")
        ids.update(dict.fromkeys(unknown, int(vocab.encode(unknown_char)[0])))
    bounds = {"train": (0, sizes.train), "val": (sizes.train, sizes.train + sizes.val),
              "test": (sizes.train + sizes.val, total)}

    with atomic_path(output_h5) as tmp_h5:
        with h5py.File(tmp_h5, "w") as f:
            datasets = {name: f.create_dataset(name, shape=(hi - lo,), dtype=id_dtype,
                                               chunks=True if compression and hi > lo else None,
                                               compression=compression if hi > lo else None)
                        for name, (lo, hi) in bounds.items()}
            pos = 0
            for chunk in reader.encode(ids, id_dtype):
                end = pos + len(chunk)
                for name, (lo, hi) in bounds.items():
                    a, b = max(lo, pos), min(hi, end)
                    if a < b:
                        datasets[name][a - lo:b - lo] = chunk[a - pos:b - pos]
                pos = end
            if pos != total:
                raise CharRNNError(f"{path} changed while it was being read")
        vocab.save(output_json)

    if log:
        log(f"read {path} ({path.stat().st_size:,} bytes, {total:,} tokens)")
        log(f"vocabulary: {len(vocab)} tokens ({'bytes' if vocab.byte_mode else encoding}"
            f"{', lowercased' if lowercase else ''}{', from ' + str(input_json) if input_json else ''})")
        if unknown:
            log(f"mapped {len(unknown)} unknown character(s) to {unknown_char!r}: {_describe(unknown, vocab.byte_mode)}")
        log(f"splits: train {sizes.train:,}, val {sizes.val:,}, test {sizes.test:,} ({np.dtype(id_dtype).name}"
            f"{', ' + compression if compression else ''})")
        log(f"wrote {output_h5} and {output_json}")
    return PreprocessResult(output_h5, output_json, vocab, sizes, path.stat().st_size)
