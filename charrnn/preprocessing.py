"""``charrnn preprocess``: a text corpus to torch-rnn's HDF5 + JSON files, vectorised and in bounded memory.

Character tokens (torch-rnn's files, byte for byte) are written here on the machinery of
:mod:`charrnn.corpus`; word tokens and documents by :mod:`charrnn.token_preprocessing`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from .corpus import (CHUNK_BYTES, DTYPE_CHOICES, DTYPES, DecodedText, PreprocessResult, SplitSizes, TokenIds,
                     _check_corpus, _check_encoding, _describe, _id_dtype, _known_vocabulary, _NeedsDecoding,
                     _TooManyTokens, _write_splits, check_fractions, corpus_reader)
from .errors import CharRNNError, InvalidInput, opt
from .fileio import atomic_path, check_readable_file
from .token_preprocessing import check_token_options, preprocess_tokens


def preprocess(input_txt: str | os.PathLike, output_h5: str | os.PathLike | None = None,
               output_json: str | os.PathLike | None = None, val_frac: float = 0.1,
               test_frac: float = 0.1, encoding: str = "utf-8", lowercase: bool = False,
               log: Callable[[str], None] | None = None, chunk_bytes: int = CHUNK_BYTES,
               input_json: str | os.PathLike | None = None, unknown_char: str | None = None,
               vocab_from: str = "all", dtype: str = "auto", compression: str | None = None,
               tokens: str = "chars", documents: str | None = None, max_vocab: int | None = None) -> PreprocessResult:
    """Write ``input_txt`` as torch-rnn's HDF5 (``/train``, ``/val``, ``/test``) and JSON files.

    Outputs default to the input's path with ``.h5`` and ``.json``. Nothing is written
    unless the whole job succeeds; existing outputs are replaced atomically. The corpus is
    read in chunks, twice (a quick count, then the encoding), so memory does not grow with its size.

    ``input_json`` encodes with an existing vocabulary (to fine-tune a model on new text);
    ``vocab_from="train"`` builds the vocabulary from the training split only. Characters
    outside the vocabulary are an error unless ``unknown_char`` names a token to map them to.
    ``dtype`` overrides torch-rnn's uint8/uint32 choice (``uint16`` halves the file for
    256..65535 tokens); ``compression`` is ``gzip`` or ``lzf`` (chunked datasets).

    ``tokens="words"`` adds the ``max_vocab`` most frequent words (and runs of spaces or symbols)
    to the characters; ``documents`` (``lines`` or ``blank-lines``) puts an end token between
    documents (:mod:`charrnn.token_preprocessing`). Without either the files are torch-rnn's.
    """
    path = check_readable_file(input_txt, "input text")
    check_fractions(val_frac, test_frac)
    _check_encoding(encoding)
    if compression not in (None, "gzip", "lzf"):
        raise InvalidInput("compression", f"must be gzip or lzf (got {compression!r})")
    output_h5 = Path(output_h5) if output_h5 else path.with_suffix(".h5")
    output_json = Path(output_json) if output_json else path.with_suffix(".json")
    for name, output in (("output_h5", output_h5), ("output_json", output_json)):
        if output.resolve() == path.resolve():
            raise InvalidInput(name, f"would overwrite the input {path}")

    if vocab_from not in ("all", "train"):
        raise InvalidInput("vocab_from", f"must be 'all' or 'train' (got {vocab_from!r})")
    if dtype != "auto" and dtype not in DTYPES:
        raise InvalidInput("dtype", DTYPE_CHOICES.format(dtype))
    check_token_options(tokens, documents, max_vocab, encoding, input_json, vocab_from, unknown_char)
    if tokens == "words" or documents:
        return preprocess_tokens(path, output_h5, output_json, val_frac, test_frac, encoding, lowercase, tokens,
                                 documents, max_vocab, dtype, compression, log, chunk_bytes)
    return _preprocess_chars(path, output_h5, output_json, val_frac, test_frac, encoding, lowercase, log,
                             chunk_bytes, input_json, unknown_char, vocab_from, dtype, compression)


def _preprocess_chars(path: Path, output_h5: Path, output_json: Path, val_frac: float, test_frac: float,
                      encoding: str, lowercase: bool, log: Callable[[str], None] | None, chunk_bytes: int,
                      input_json, unknown_char: str | None, vocab_from: str, dtype: str,
                      compression: str | None) -> PreprocessResult:
    """torch-rnn's character tokens: the checked options of :func:`preprocess`."""
    byte_mode = encoding == "bytes"
    known = _known_vocabulary(input_json, byte_mode) if input_json else None
    if known is not None:
        _id_dtype(known, dtype)

    reader = corpus_reader(path, encoding, lowercase, chunk_bytes)
    total = reader.count()
    wide = known is not None and len(known) > 255  # ids above 255: uint32 tables
    with atomic_path(output_h5) as tmp_h5:
        while True:
            if total == 0:
                raise CharRNNError(f"{path}: the corpus is empty")
            sizes = SplitSizes.for_total(total, val_frac, test_frac)
            table_dtype = np.uint32 if wide else np.uint8
            id_dtype = np.dtype(table_dtype if dtype == "auto" else DTYPES[dtype])
            ids = TokenIds(known, sizes.train if vocab_from == "train" else None, unknown_char,
                           byte_mode, np.iinfo(table_dtype).max)
            try:
                written = _write_splits(tmp_h5, reader.encode(ids, table_dtype), sizes, id_dtype, compression)
                break
            except _TooManyTokens:
                wide = True
            except _NeedsDecoding:
                reader = DecodedText(path, encoding, lowercase, chunk_bytes)
                total = reader.count()
        vocab = known if known is not None else ids.vocabulary()
        unknown = ids.unknown
        if not input_json:
            _check_corpus(path, vocab, total)
        _id_dtype(vocab, dtype)
        if unknown and unknown_char is None:
            raise CharRNNError(f"{path}: character(s) not in the vocabulary: {_describe(unknown, vocab.byte_mode)} "
                               f"(pass {opt('unknown_char')} C to map them to a character C of the vocabulary)")
        if written != total:
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
