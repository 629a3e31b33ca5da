"""``charrnn preprocess --tokens words`` and ``--documents``: word tokens and end-of-document tokens.

Two passes over the corpus, in chunks that end on segment boundaries (:mod:`charrnn.tokens`):
the first finds the characters (in order of first appearance, torch-rnn's order) and counts every
segment of two or more characters by its hash; the most frequent become word tokens. The second
encodes each chunk with lookup tables and a sorted hash table, all vectorised, into a temporary
id file beside the output (the split sizes are only known once the corpus is encoded), which is
then copied into the HDF5 datasets. Memory stays bounded by the chunk size and the number of
distinct segments (pruned when it passes :data:`MAX_DISTINCT`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import tokens
from .errors import CharRNNError, InvalidInput, opt
from .fileio import atomic_path
from .corpus import (CHUNK_BYTES, DecodedText, PreprocessResult, SplitSizes, _check_corpus, _id_dtype,
                            _new_tokens_in_order, _write_splits)
from .vocab import Vocabulary

DEFAULT_MAX_VOCAB = 2000  # word tokens on top of the characters
MAX_DISTINCT = 1 << 22  # distinct segments counted before the ones seen once are dropped
MIN_COUNT = 2  # a segment seen once is cheaper spelled out
COPY_IDS = 1 << 22  # ids per block when copying the encoded corpus into the HDF5 file


class SegmentCounts:
    """How often each segment of two or more characters occurs, by hash (texts kept for the counted ones)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.texts: dict[int, str] = {}

    def add(self, points: np.ndarray) -> None:
        starts, ends = tokens.word_spans(points)
        if len(starts) == 0:
            return
        keys, first, counts = np.unique(tokens.span_hashes(points, starts, ends), return_index=True,
                                        return_counts=True)
        known, texts = self.counts, self.texts
        for key, at, count in zip(keys.tolist(), first.tolist(), counts.tolist()):
            if key in known:
                known[key] += count
            else:
                known[key] = count
                texts[key] = points[starts[at]:ends[at]].tobytes().decode("utf-32-le", "surrogatepass")
        if len(known) > MAX_DISTINCT:  # keep memory bounded: rare segments will not be chosen anyway
            for key in [k for k, c in known.items() if c < MIN_COUNT]:
                del known[key], texts[key]

    def most_frequent(self, n: int) -> list[str]:
        """The ``n`` most frequent segments seen at least :data:`MIN_COUNT` times (ties by text)."""
        ranked = sorted(((-c, self.texts[k]) for k, c in self.counts.items() if c >= MIN_COUNT))
        return [text for _, text in ranked[:n]]


def _scan(reader: DecodedText, documents: str | None, words: bool) -> tuple[list[int], SegmentCounts, int, int]:
    """Pass 1: the characters in order of first appearance, the segment counts, the number of
    characters and of documents."""
    seen = np.zeros(tokens.END_POINT + 1, dtype=np.uint8)
    order: list[tuple[int, int]] = []
    counts = SegmentCounts()
    total, ends, last = 0, 0, tokens.END_POINT
    for points in tokens.segment_stream(reader.chunks(), documents):
        order.extend((total + i, t) for i, t in _new_tokens_in_order(points, seen))
        if words:
            counts.add(points)
        if documents:
            ends += int(np.count_nonzero(points == tokens.END_POINT))
        total, last = total + len(points), int(points[-1])
    docs = ends + (last != tokens.END_POINT) if total else 0
    return [t for _, t in sorted(order)], counts, total, docs


def build_vocabulary(chars: list[int], counts: SegmentCounts, max_vocab: int, documents: str | None) -> Vocabulary:
    """Characters first (torch-rnn's order, the end token where it first appears), then the word tokens."""
    chosen: list[int | str] = [tokens.END_NAME if c == tokens.END_POINT else c for c in chars]
    chosen += counts.most_frequent(max_vocab) if max_vocab else []
    end = chosen.index(tokens.END_NAME) + 1 if documents else None
    return Vocabulary(tuple(chosen), False, end, documents)


def _encoded(reader: DecodedText, vocab: Vocabulary) -> Iterator[np.ndarray]:
    char_ids, word_hashes, word_ids = vocab.segment_tables()
    for points in tokens.segment_stream(reader.chunks(), vocab.documents):
        yield tokens.encode_points(points, char_ids, word_hashes, word_ids)


def check_token_options(tokens_kind: str, documents: str | None, max_vocab: int | None, encoding: str,
                        input_json, vocab_from: str, unknown_char) -> None:
    if tokens_kind not in ("chars", "words"):
        raise InvalidInput("tokens", f"must be 'chars' or 'words' (got {tokens_kind!r})")
    if documents is not None and documents not in tokens.SEPARATORS:
        raise InvalidInput("documents", f"must be 'lines' or 'blank-lines' (got {documents!r})")
    if max_vocab is not None and max_vocab <= 0:
        raise InvalidInput("max_vocab", f"must be positive (got {max_vocab})")
    if max_vocab is not None and tokens_kind != "words":
        raise InvalidInput("max_vocab", f"needs {opt('tokens')} words")
    if tokens_kind == "chars" and documents is None:
        return
    if encoding == "bytes":
        raise InvalidInput("encoding", f"bytes works with character tokens only (drop {opt('tokens')} words / {opt('documents')})")
    if input_json or unknown_char is not None or vocab_from != "all":
        raise InvalidInput("tokens", f"words and {opt('documents')} build their own vocabulary: drop {opt('input_json')}, "
                                     f"{opt('unknown_char')} and {opt('vocab_from')}")


def preprocess_tokens(path: Path, output_h5: Path, output_json: Path, val_frac: float, test_frac: float,
                      encoding: str, lowercase: bool, tokens_kind: str, documents: str | None,
                      max_vocab: int | None, dtype: str, compression: str | None,
                      log: Callable[[str], None] | None, chunk_bytes: int = CHUNK_BYTES) -> PreprocessResult:
    """Write ``path`` as HDF5 + JSON with word tokens and/or end-of-document tokens (see the module)."""
    words = tokens_kind == "words"
    reader = DecodedText(path, encoding, lowercase, chunk_bytes)
    chars, counts, num_chars, docs = _scan(reader, documents, words)
    if num_chars == 0:
        raise CharRNNError(f"{path}: the corpus is empty")
    if documents and docs < 2:
        raise CharRNNError(f"{path}: holds one document; --documents {documents} needs at least two "
                           f"(separated by {'a newline' if documents == 'lines' else 'a blank line'})")
    vocab = build_vocabulary(chars, counts, (max_vocab or DEFAULT_MAX_VOCAB) if words else 0, documents)
    _check_corpus(path, vocab, num_chars)
    id_dtype = _id_dtype(vocab, dtype)
    with atomic_path(output_h5) as tmp_h5:
        fd, raw_name = tempfile.mkstemp(prefix=f".{output_h5.name}.", suffix=".ids", dir=output_h5.parent)
        try:
            with os.fdopen(fd, "wb") as raw:
                total = 0
                for ids in _encoded(reader, vocab):
                    ids.astype(np.uint32, copy=False).tofile(raw)
                    total += len(ids)
            sizes = SplitSizes.for_total(total, val_frac, test_frac)
            stored = np.memmap(raw_name, dtype=np.uint32, mode="r") if total else np.zeros(0, np.uint32)
            blocks = (stored[i:i + COPY_IDS] for i in range(0, total, COPY_IDS))
            written = _write_splits(tmp_h5, blocks, sizes, id_dtype, compression)
            del stored, blocks
        finally:
            Path(raw_name).unlink(missing_ok=True)
        if written != total:
            raise CharRNNError(f"{path} changed while it was being read")
        vocab.save(output_json)
    if log:
        kind = f"{len(vocab) - len(chars)} words + {len(chars)} characters" if words else f"{len(vocab)} characters"
        log(f"read {path} ({path.stat().st_size:,} bytes, {num_chars:,} characters, {total:,} tokens, "
            f"{num_chars / max(total, 1):.2f} characters per token)")
        log(f"vocabulary: {len(vocab)} tokens ({kind}{', lowercased' if lowercase else ''}"
            f"{f', {docs:,} documents ({documents}), end token id {vocab.end_token}' if documents else ''})")
        log(f"splits: train {sizes.train:,}, val {sizes.val:,}, test {sizes.test:,} ({np.dtype(id_dtype).name}"
            f"{', ' + compression if compression else ''})")
        log(f"wrote {output_h5} and {output_json}")
    return PreprocessResult(output_h5, output_json, vocab, sizes, path.stat().st_size)
