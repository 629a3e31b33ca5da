"""Turn a text corpus into torch-rnn's HDF5 + JSON files, vectorised and in bounded memory.

The corpus is read twice in chunks (an incremental decoder keeps multi-byte characters
whole across chunk boundaries): the first pass finds the vocabulary in order of first
appearance and counts the tokens, the second maps each chunk to ids with a lookup table and
writes it straight into the train/val/test datasets.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import CharRNNError
from .fileio import atomic_path, check_readable_file
from .vocab import Vocabulary

CHUNK_BYTES = 1 << 24  # 16 MiB of input per chunk
_MAX_CODE_POINT = 0x110000
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


def _to_code_points(text: str) -> np.ndarray:
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def read_code_points(path: Path, encoding: str = "utf-8", lowercase: bool = False,
                     chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """Yield the corpus as arrays of code points (or byte values in ``bytes`` mode)."""
    decoder = None if encoding == "bytes" else codecs.getincrementaldecoder(encoding)("strict")
    ascii_compatible = encoding != "bytes" and codecs.lookup(encoding).name in _ASCII_COMPATIBLE
    offset = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
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
                    raise CharRNNError(
                        f"{path}: not valid {encoding} at byte {max(where, 0)} ({exc.reason}); "
                        "pass the right --encoding, or --encoding bytes to model raw bytes"
                    ) from None
                if lowercase:
                    text = text.lower()
                if text:
                    yield _to_code_points(text)
            if final:
                return
            offset += len(block)


def _as_bytes(points: np.ndarray) -> bytes:
    """The bytes behind a uint8 array, without a copy when it was made from bytes."""
    base = points.base
    return base if isinstance(base, bytes) and len(base) == points.nbytes else points.tobytes()


def _new_tokens_in_order(points: np.ndarray, seen: np.ndarray) -> list[int]:
    """Tokens of ``points`` not yet ``seen``, in order of first appearance; marks them seen."""
    found: list[tuple[int, int]] = []

    def record(values: np.ndarray, first: np.ndarray) -> None:
        new = ~seen[values]
        found.extend(zip(first[new].tolist(), values[new].tolist()))
        seen[values[new]] = True

    # 1. most characters first appear early: look at the head of the chunk
    record(*np.unique(points[:1 << 16], return_index=True))
    # 2. whatever else is still unseen anywhere in the chunk
    if points.dtype == np.uint8:  # bytes.translate deletes the seen bytes at memory speed
        known = np.flatnonzero(seen[:256]).astype(np.uint8).tobytes()
        missing = np.unique(np.frombuffer(_as_bytes(points).translate(None, known), dtype=np.uint8))
    else:
        present = np.flatnonzero(np.bincount(points))
        missing = present[~seen[present]]
    # 3. where each of those first appears
    if len(missing) > 16:
        record(*np.unique(points, return_index=True))
    else:
        for value in missing.tolist():
            found.append((int(np.argmax(points == value)), value))
            seen[value] = True
    return [v for _, v in sorted(found)]


def build_vocabulary(chunks: Iterator[np.ndarray], byte_mode: bool) -> tuple[Vocabulary, int]:
    """First pass: the vocabulary in order of first appearance, and the token count."""
    seen = np.zeros(256 if byte_mode else _MAX_CODE_POINT, dtype=bool)
    tokens: list[int] = []
    total = 0
    for points in chunks:
        total += len(points)
        tokens += _new_tokens_in_order(points, seen)
    return Vocabulary(tuple(tokens), byte_mode), total


def _check_corpus(path: Path, vocab: Vocabulary, total: int, encoding: str) -> None:
    if total == 0:
        raise CharRNNError(f"{path}: the corpus is empty")
    if len(vocab) == 1:
        raise CharRNNError(f"{path}: the corpus is one character repeated; there is nothing to learn")
    if not vocab.byte_mode and 0 in vocab.tokens:
        raise CharRNNError(f"{path}: contains NUL characters, so it looks binary; use --encoding bytes to model raw bytes")


def preprocess(input_txt: str | os.PathLike, output_h5: str | os.PathLike | None = None,
               output_json: str | os.PathLike | None = None, val_frac: float = 0.1,
               test_frac: float = 0.1, encoding: str = "utf-8", lowercase: bool = False,
               log: Callable[[str], None] | None = None, chunk_bytes: int = CHUNK_BYTES) -> PreprocessResult:
    """Write ``input_txt`` as torch-rnn's HDF5 (``/train``, ``/val``, ``/test``) and JSON files.

    Outputs default to the input's path with ``.h5`` and ``.json``. Nothing is written
    unless the whole job succeeds; existing outputs are replaced atomically.
    """
    import h5py

    path = check_readable_file(input_txt, "input text")
    check_fractions(val_frac, test_frac)
    _check_encoding(encoding)
    output_h5 = Path(output_h5) if output_h5 else path.with_suffix(".h5")
    output_json = Path(output_json) if output_json else path.with_suffix(".json")
    if path.resolve() in (output_h5.resolve(), output_json.resolve()):
        raise CharRNNError(f"output would overwrite the input {path}")

    byte_mode = encoding == "bytes"
    vocab, total = build_vocabulary(read_code_points(path, encoding, lowercase, chunk_bytes), byte_mode)
    _check_corpus(path, vocab, total, encoding)
    sizes = SplitSizes.for_total(total, val_frac, test_frac)

    lookup = np.zeros(max(256, max(vocab.tokens) + 1), dtype=vocab.id_dtype)
    lookup[list(vocab.tokens)] = np.arange(1, len(vocab) + 1)
    bounds = {"train": (0, sizes.train), "val": (sizes.train, sizes.train + sizes.val),
              "test": (sizes.train + sizes.val, total)}

    with atomic_path(output_h5) as tmp_h5:
        with h5py.File(tmp_h5, "w") as f:
            datasets = {name: f.create_dataset(name, shape=(hi - lo,), dtype=vocab.id_dtype)
                        for name, (lo, hi) in bounds.items()}
            pos = 0
            byte_table = lookup[:256].tobytes() if lookup.dtype == np.uint8 else None
            for points in read_code_points(path, encoding, lowercase, chunk_bytes):
                if byte_table is not None and points.dtype == np.uint8:  # translate at memory speed
                    ids = np.frombuffer(_as_bytes(points).translate(byte_table), dtype=np.uint8)
                else:
                    ids = lookup[points]
                end = pos + len(ids)
                for name, (lo, hi) in bounds.items():
                    a, b = max(lo, pos), min(hi, end)
                    if a < b:
                        datasets[name][a - lo:b - lo] = ids[a - pos:b - pos]
                pos = end
            if pos != total:
                raise CharRNNError(f"{path} changed while it was being read")
        vocab.save(output_json)

    if log:
        log(f"read {path} ({path.stat().st_size:,} bytes, {total:,} tokens)")
        log(f"vocabulary: {len(vocab)} tokens ({'bytes' if byte_mode else encoding}"
            f"{', lowercased' if lowercase else ''})")
        log(f"splits: train {sizes.train:,}, val {sizes.val:,}, test {sizes.test:,} ({vocab.id_dtype.name})")
        log(f"wrote {output_h5} and {output_json}")
    return PreprocessResult(output_h5, output_json, vocab, sizes, path.stat().st_size)
