"""Word tokens and document ends, vectorised over arrays of code points.

Text is cut into *segments*: maximal runs of one character class (word characters, spaces,
newlines, other symbols), each run cut into pieces of at most :data:`MAX_WORD` characters
counted from the run's start, and every end-of-document mark a segment of its own. A segment
depends only on its run, so the cut of a chunk is the cut of the whole text as long as the last
segment of a chunk is carried into the next (:func:`segment_stream`), and a document encodes to
the same ids alone as inside the corpus (what ``--novel`` relies on).

Segments are named by a 64-bit polynomial hash of their code points and length, computed for all
of them at once from prefix sums (wrapping uint64 arithmetic). A word token is a frequent segment
of two or more characters; every other segment is spelled out in character tokens.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

END_POINT = 0x110000  # the end-of-document mark inside a code-point array: one past Unicode
END_NAME = "<END>"  # its name in the JSON vocabulary (no segment can be spelled like this)
SEPARATORS = {"lines": "\n", "blank-lines": "\n\n"}  # what an end token stands for in text
MAX_WORD = 32  # characters: longer runs are cut into pieces, so no segment (and no carry) grows without bound
WORD, SPACE, NEWLINE, OTHER, END = 0, 1, 2, 3, 4
_UNSET = 255
_BASE = np.uint64(0x100000001B3)  # odd, so invertible modulo 2**64
_BASE_INV = np.uint64(pow(int(_BASE), -1, 1 << 64))
_LENGTH_MIX = np.uint64(0x9E3779B97F4A7C15)

_classes = np.full(END_POINT + 1, _UNSET, dtype=np.uint8)
_classes[END_POINT] = END
_powers = {"up": np.ones(1, np.uint64), "down": np.ones(1, np.uint64)}


def _class_of(char: str) -> int:
    if char == "\n":
        return NEWLINE
    if char.isalnum() or char == "_":
        return WORD
    return SPACE if char.isspace() else OTHER


def classes(points: np.ndarray) -> np.ndarray:
    """The class of each code point (a table filled in as new characters appear)."""
    found = _classes[points]
    unset = found == _UNSET
    if unset.any():
        for p in np.unique(points[unset]).tolist():
            _classes[p] = _class_of(chr(p)) if p < 0xD800 or 0xDFFF < p < END_POINT else OTHER
        found = _classes[points]
    return found


def segment_starts(points: np.ndarray) -> np.ndarray:
    """Indices where segments begin (the first is 0), for a non-empty array."""
    cls = classes(points)
    starts = np.concatenate([[0], np.flatnonzero(cls[1:] != cls[:-1]) + 1])
    lengths = np.diff(np.append(starts, len(points)))
    step = np.where(cls[starts] == END, 1, MAX_WORD)  # end marks: one segment each
    long = np.flatnonzero(lengths > step)
    if len(long) == 0:  # the usual case: no run needs cutting
        return starts
    return np.union1d(starts, _pieces(starts[long], lengths[long], step[long]))


def _pieces(starts: np.ndarray, lengths: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The starts of the second and later pieces of long runs: every ``step`` from each run's start."""
    counts = (lengths - 1) // step
    first = np.cumsum(counts) - counts
    k = np.arange(int(counts.sum())) - np.repeat(first, counts) + 1
    return np.repeat(starts, counts) + k * np.repeat(step, counts)


def last_segment_start(points: np.ndarray) -> int:
    """Where the last segment of a non-empty array begins (looking back only as far as its run)."""
    window = 4096
    while True:
        lo = max(0, len(points) - window)
        cls = classes(points[lo:])
        change = np.flatnonzero(cls[1:] != cls[:-1])
        if len(change) or lo == 0:
            run = lo + (int(change[-1]) + 1 if len(change) else 0)  # the last run begins here
            step = 1 if cls[run - lo] == END else MAX_WORD
            return run + (len(points) - run - 1) // step * step
        window *= 4


def mark_documents(points: np.ndarray, documents: str | None) -> np.ndarray:
    """``points`` with each document separator (``lines``: a run of newlines; ``blank-lines``: a run
    of two or more) replaced by one :data:`END_POINT`. Call it on whole runs of newlines."""
    if documents is None or len(points) == 0:
        return points
    points = points.astype(np.uint32, copy=False)
    newline = np.concatenate([[False], points == 10, [False]])
    edges = np.flatnonzero(newline[1:] != newline[:-1])
    starts, ends = edges[0::2], edges[1::2]
    if documents == "blank-lines":
        keep = ends - starts >= 2
        starts, ends = starts[keep], ends[keep]
    if len(starts) == 0:
        return points
    out = points.copy()
    out[starts] = END_POINT
    drop = np.zeros(len(points) + 1, dtype=np.int64)
    np.add.at(drop, starts + 1, 1)
    np.add.at(drop, ends, -1)
    return out[np.cumsum(drop[:-1]) == 0]


def segment_stream(chunks: Iterable[np.ndarray], documents: str | None) -> Iterator[np.ndarray]:
    """Arrays of code points (end marks included) that end on segment boundaries."""
    carry = np.zeros(0, np.uint32)
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        points = np.concatenate([carry, chunk.astype(np.uint32, copy=False)])
        cut = last_segment_start(points)
        if documents and points[cut] == 10:  # keep a whole run of newlines together: it may be one separator
            other = np.flatnonzero(points[:cut] != 10)
            cut = int(other[-1]) + 1 if len(other) else 0
        if cut == 0:  # one segment so far (a single run shorter than MAX_WORD): keep reading
            carry = points
            continue
        carry = points[cut:]
        yield mark_documents(points[:cut], documents)
    if len(carry):
        yield mark_documents(carry, documents)


def _power(kind: str, n: int) -> np.ndarray:
    table = _powers[kind]
    if len(table) < n:
        size = max(n, 2 * len(table))
        factors = np.full(size, _BASE if kind == "up" else _BASE_INV, dtype=np.uint64)
        factors[0] = 1
        with np.errstate(over="ignore"):
            table = _powers[kind] = np.cumprod(factors, dtype=np.uint64)
    return table[:n]


def span_hashes(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit hash of ``values[a:b]`` (and its length) for every span (a, b), all at once."""
    with np.errstate(over="ignore"):
        terms = (values.astype(np.uint64) + np.uint64(1)) * _power("up", len(values))
        prefix = np.concatenate([np.zeros(1, np.uint64), np.cumsum(terms, dtype=np.uint64)])
        raw = (prefix[ends] - prefix[starts]) * _power("down", len(values))[starts]
        return raw ^ ((ends - starts).astype(np.uint64) * _LENGTH_MIX)


def word_spans(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the segments that could be word tokens: two or more characters."""
    if len(points) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = segment_starts(points)
    ends = np.append(starts[1:], len(points))
    long = ends - starts >= 2
    return starts[long], ends[long]


def hash_text(text: str) -> int:
    """The segment hash of ``text`` as one span."""
    points = to_points(text)
    return int(span_hashes(points, np.array([0]), np.array([len(points)]))[0])


def to_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def encode_points(points: np.ndarray, char_ids: np.ndarray, word_hashes: np.ndarray,
                  word_ids: np.ndarray) -> np.ndarray:
    """Token ids for whole segments of ``points``: a segment whose hash is a word token's (sorted
    ``word_hashes``) becomes that word's id, every other character its id in ``char_ids``."""
    ids = char_ids[points].astype(np.uint32)
    if len(word_hashes) == 0 or len(points) == 0:
        return ids
    starts, ends = word_spans(points)
    hashes = span_hashes(points, starts, ends)
    at = np.minimum(np.searchsorted(word_hashes, hashes), len(word_hashes) - 1)
    hit = word_hashes[at] == hashes
    if not hit.any():
        return ids
    starts, ends = starts[hit], ends[hit]
    ids[starts] = word_ids[at[hit]]
    inside = np.zeros(len(points) + 1, dtype=np.int64)
    inside[starts + 1] += 1  # segments are disjoint and at least two long: no index repeats
    inside[ends] -= 1
    return ids[np.cumsum(inside[:-1]) == 0]
