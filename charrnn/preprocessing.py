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


def build_vocabulary(chunks: Iterator[np.ndarray], byte_mode: bool, known: Vocabulary | None = None,
                     limit: int | None = None) -> tuple[list[int], int]:
    """A pass over the corpus: the tokens not in ``known``, in order of first appearance, and the
    token count. ``limit`` looks only at the first ``limit`` tokens (the training split)."""
    seen = np.zeros(256 if byte_mode else _MAX_CODE_POINT, dtype=bool)
    if known is not None:
        seen[[t for t in known.tokens if t < len(seen)]] = True
    tokens: list[int] = []
    total = 0
    for points in chunks:
        if limit is not None:
            points = points[:max(0, limit - total)]
        total += len(points)
        tokens += _new_tokens_in_order(points, seen)
    return tokens, total


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


def _vocabulary(path: Path, encoding: str, lowercase: bool, chunk_bytes: int, input_json, vocab_from: str,
                val_frac: float, test_frac: float) -> tuple[Vocabulary, list[int], int]:
    """The vocabulary to encode with, the corpus tokens outside it, and the token count."""
    byte_mode = encoding == "bytes"
    chunks = lambda: read_code_points(path, encoding, lowercase, chunk_bytes)  # noqa: E731
    if input_json:
        vocab = Vocabulary.load(input_json)
        if vocab.byte_mode and not byte_mode:
            raise CharRNNError(f"{input_json} is a byte vocabulary: add --encoding bytes")
        if byte_mode and not vocab.byte_mode and max(vocab.tokens) > 127:
            raise CharRNNError(f"{input_json} is a character vocabulary: drop --encoding bytes")
        unknown, total = build_vocabulary(chunks(), byte_mode, known=vocab)
        return Vocabulary(vocab.tokens, byte_mode or vocab.byte_mode), unknown, total
    tokens, total = build_vocabulary(chunks(), byte_mode)
    if vocab_from == "train":
        train_size = SplitSizes.for_total(total, val_frac, test_frac).train
        train_tokens, _ = build_vocabulary(chunks(), byte_mode, limit=train_size)
        in_train = set(train_tokens)
        return Vocabulary(tuple(train_tokens), byte_mode), [t for t in tokens if t not in in_train], total
    if vocab_from != "all":
        raise CharRNNError(f"--vocab-from must be 'all' or 'train' (got {vocab_from!r})")
    return Vocabulary(tuple(tokens), byte_mode), [], total


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

    vocab, unknown, total = _vocabulary(path, encoding, lowercase, chunk_bytes, input_json, vocab_from,
                                        val_frac, test_frac)
    if not input_json:
        _check_corpus(path, vocab, total)
    elif total == 0:
        raise CharRNNError(f"{path}: the corpus is empty")
    id_dtype = _id_dtype(vocab, dtype)
    sizes = SplitSizes.for_total(total, val_frac, test_frac)

    lookup = np.zeros(max(256, max(vocab.tokens + tuple(unknown)) + 1), dtype=id_dtype)
    lookup[list(vocab.tokens)] = np.arange(1, len(vocab) + 1)
    if unknown:
        if unknown_char is None:
            raise CharRNNError(f"{path}: character(s) not in the vocabulary: {_describe(unknown, vocab.byte_mode)} "
                               "(pass --unknown-char C to map them to a character C of the vocabulary)")
        if len(unknown_char) != 1:
            raise CharRNNError("--unknown-char must be a single character")
        lookup[unknown] = int(vocab.encode(unknown_char)[0])
    bounds = {"train": (0, sizes.train), "val": (sizes.train, sizes.train + sizes.val),
              "test": (sizes.train + sizes.val, total)}

    with atomic_path(output_h5) as tmp_h5:
        with h5py.File(tmp_h5, "w") as f:
            datasets = {name: f.create_dataset(name, shape=(hi - lo,), dtype=id_dtype,
                                               chunks=True if compression and hi > lo else None,
                                               compression=compression if hi > lo else None)
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
        log(f"vocabulary: {len(vocab)} tokens ({'bytes' if vocab.byte_mode else encoding}"
            f"{', lowercased' if lowercase else ''}{', from ' + str(input_json) if input_json else ''})")
        if unknown:
            log(f"mapped {len(unknown)} unknown character(s) to {unknown_char!r}: {_describe(unknown, vocab.byte_mode)}")
        log(f"splits: train {sizes.train:,}, val {sizes.val:,}, test {sizes.test:,} ({np.dtype(id_dtype).name}"
            f"{', ' + compression if compression else ''})")
        log(f"wrote {output_h5} and {output_json}")
    return PreprocessResult(output_h5, output_json, vocab, sizes, path.stat().st_size)
