"""Lists of documents: ``charrnn sample --documents N [--unique] [--novel]``.

Built on :meth:`Sampler.generate_many`: every row starts from the end token (the state the model is
in at the start of a document, since training carries state across documents), reads the start
text, and stops at the next end token, found as its separator text (a newline or a blank line
never occurs inside a document, so the two are the same). Rows are drawn a batch at a time until
N documents pass the filters or :func:`draw_cap` rows have been drawn.

*Verbatim in the training split* means equal to one of its documents: the documents are the spans
between end tokens, so :class:`TrainingDocuments` keeps a sorted array of 64-bit hashes of their
token ids (a document encodes to the same ids alone as inside the corpus, see
:mod:`charrnn.tokens`). A new name that is part of a longer training name is still new.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import tokens
from ..errors import CharRNNError, InvalidInput, opt
from ..vocab import Vocabulary
from .sampler import Sampler

DEFAULT_LENGTH = 500  # characters per document when --length is not given
DEFAULT_BATCH = 100  # rows per batch when --num-samples is not given
FIRST_TOKENS = 64  # tokens per row in a first draw
HASH_BLOCK = 1 << 22  # training ids hashed per block


def draw_cap(n: int) -> int:
    """Rows drawn at most for ``n`` documents, before giving up on the filters."""
    return 20 * n + 100


def require_documents(vocab: Vocabulary) -> None:
    if vocab.end_token is None:
        raise InvalidInput("documents", "needs a model trained on documents: its vocabulary has no end token "
                                        f"(preprocess with {opt('documents')} lines or blank-lines)")


class TrainingDocuments:
    """The documents of a training split, as hashes of their token ids; ``in`` says whether a text is one."""

    def __init__(self, train_ids: np.ndarray, vocab: Vocabulary) -> None:
        require_documents(vocab)
        self.vocab = vocab
        ends = np.flatnonzero(np.asarray(train_ids) == vocab.end_token)
        starts, stops = np.concatenate([[0], ends + 1]), np.concatenate([ends, [len(train_ids)]])
        keep = stops > starts
        starts, stops = starts[keep], stops[keep]
        found, i = [np.zeros(0, np.uint64)], 0
        while i < len(starts):  # blocks of whole documents, about HASH_BLOCK ids each: bounded memory
            j = max(i + 1, int(np.searchsorted(starts, starts[i] + HASH_BLOCK)))
            lo, hi = starts[i], stops[j - 1]
            block = np.asarray(train_ids[lo:hi], dtype=np.int64)
            found.append(tokens.span_hashes(block, starts[i:j] - lo, stops[i:j] - lo))
            i = j
        self.hashes = np.unique(np.concatenate(found))

    @classmethod
    def from_file(cls, input_h5: str | Path, vocab: Vocabulary) -> "TrainingDocuments":
        from ..data import load_splits
        return cls(load_splits(input_h5, vocab, ("train",))["train"], vocab)

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, text: str) -> bool:
        try:
            ids = self.vocab.encode(text)
        except CharRNNError:  # a character the corpus never had: not one of its documents
            return False
        if len(ids) == 0 or len(self.hashes) == 0:
            return False
        h = tokens.span_hashes(ids, np.array([0]), np.array([len(ids)]))[0]
        at = min(int(np.searchsorted(self.hashes, h)), len(self.hashes) - 1)
        return bool(self.hashes[at] == h)


@dataclass
class DocumentList:
    documents: list[str]
    drawn: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count

    def summary(self, wanted: int) -> str:
        reasons = ", ".join(f"{n} {why}" for why, n in self.rejected.most_common()) or "none"
        got = f"{len(self.documents)} documents" if len(self.documents) >= wanted else \
            f"only {len(self.documents)} of {wanted} documents (gave up after {draw_cap(wanted)} draws)"
        return f"{got} from {self.drawn} drawn; rejected: {reasons}"


def sample_documents(sampler: Sampler, n: int, start_text: str = "", length: int = DEFAULT_LENGTH,
                     unique: bool = False, novel: TrainingDocuments | None = None, batch: int = DEFAULT_BATCH,
                     seed: int | None = None, **params) -> DocumentList:
    """``n`` documents, each primed with ``start_text`` and cut at the end token (or ``length``
    characters); ``unique`` drops repeats, ``novel`` drops documents of the training split.
    ``params`` are :meth:`Sampler.generate_many`'s sampling options (temperature, top_k, ...);
    document ``k`` drawn is the row of seed ``seed + k``."""
    vocab = sampler.vocab
    require_documents(vocab)
    if n < 1:
        raise InvalidInput("documents", f"must be positive (got {n})")
    if length < 1:
        raise InvalidInput("length", f"must be positive (got {length})")
    seed = secrets.randbits(48) if seed is None else seed  # a seed per row, so that a row can be drawn longer
    draw = _Drawer(sampler, vocab.separator + start_text, length, params)
    out, seen, cap = DocumentList([]), set(), draw_cap(n)
    while len(out.documents) < n and out.drawn < cap:
        rows = min(batch, cap - out.drawn)
        docs = draw.batch(rows, seed + out.drawn)
        out.drawn += rows
        for doc in docs:
            why = _rejected(doc, start_text, seen, unique, novel)
            if why:
                out.rejected[why] += 1
                continue
            seen.add(doc)
            out.documents.append(doc)
            if len(out.documents) == n:
                break
    return out


class _Drawer:
    """Rows of documents. Most documents are short, so a batch is drawn :data:`FIRST_TOKENS` tokens
    long, and only the rows that have not reached their end are drawn again, longer, with the same
    seed (so they continue exactly as they began)."""

    def __init__(self, sampler: Sampler, prefix: str, length: int, params: dict) -> None:
        self.sampler, self.prefix, self.length, self.params = sampler, prefix, length, params
        self.primer = len(sampler.vocab.encode(prefix))  # tokens: the end token and the start text
        self.sep = sampler.vocab.separator

    def batch(self, rows: int, seed: int) -> list[str]:
        tokens = min(FIRST_TOKENS, self.length)
        texts = self.sampler.generate_many(rows, self.primer + tokens, self.prefix, seed=seed, **self.params)
        docs = [self._document(t) for t in texts]
        for j, doc in enumerate(docs):
            while doc is None:
                tokens = min(4 * tokens, self.length)
                text = self.sampler.generate_many(1, self.primer + tokens, self.prefix, seed=seed + j, **self.params)[0]
                doc = self._document(text, final=tokens >= self.length)
        return docs

    def _document(self, text: str, final: bool = False) -> str | None:
        """The document in a row (cut at the end token or ``length`` characters); None if it goes on."""
        body = text[len(self.sep):]
        cut = body.find(self.sep, len(self.prefix) - len(self.sep))
        if cut >= 0:
            return body[:cut][:self.length]
        if final or len(body) >= self.length:
            return body[:self.length]
        return None


def _rejected(doc: str, start_text: str, seen: set, unique: bool, novel: TrainingDocuments | None) -> str | None:
    if not doc.strip() or doc == start_text:
        return "empty"
    if unique and doc in seen:
        return "repeats"
    if novel is not None and doc in novel:
        return "in the training data"
    return None


def training_file(checkpoint: str | Path, input_h5: str | Path | None) -> Path:
    """The HDF5 file ``--novel`` compares with: ``input_h5``, else the one the checkpoint records."""
    if input_h5 is None:
        from ..checkpoint import load_checkpoint, resolve_checkpoint
        ckpt = load_checkpoint(resolve_checkpoint(checkpoint))
        saved = ckpt.train_state.get("config") or ckpt.info.get("opt") or {}
        input_h5 = saved.get("input_h5") if isinstance(saved, dict) else None
        if not input_h5 or not isinstance(input_h5, str):
            raise InvalidInput("novel", f"needs the training data: pass {opt('input_h5')} "
                                        "(the checkpoint does not record it)")
    path = Path(input_h5)
    if not path.is_file():
        raise InvalidInput("novel", f"needs the training data, and {path} is not there: pass {opt('input_h5')}")
    return path


def format_documents(docs: Sequence[str], vocab: Vocabulary) -> str:
    """One document per line (``lines``) or per block (``blank-lines``)."""
    return vocab.separator.join(docs)

