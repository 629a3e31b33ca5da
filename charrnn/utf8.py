"""UTF-8 bytes to token values with NumPy, as strict as Python's codec and without making a str.

A character's value comes from a table indexed by the two bytes it starts with, read as one
little-endian uint16: one gather over the bytes settles ASCII and two-byte characters (accents,
Cyrillic, Greek, Hebrew, Arabic...). Text with few multi-byte characters takes a 256-entry byte
table instead (``bytes.translate``, memory speed). The few starts left at 0 (three- and four-byte
characters such as curly quotes, dashes, the BOM and emoji; characters not in the table; invalid
lead bytes) are decoded on their own, still vectorised. Counting continuation bytes then proves
that every one of them belongs to a character, so invalid UTF-8 never passes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

MAX_CODE_POINT = 0x110000
BLOCK = 1 << 16  # bytes per step of the vectorised work: small enough to stay in the core's cache
_BATCH = 1 << 16  # characters decoded one by one per step

_LENGTH = np.zeros(256, dtype=np.uint8)  # bytes in a character with this lead byte; 0: not a lead
_LENGTH[:0x80], _LENGTH[0xC2:0xE0], _LENGTH[0xE0:0xF0], _LENGTH[0xF0:0xF5] = 1, 2, 3, 4
_LEAD_BITS = np.array([0, 0x7F, 0x1F, 0x0F, 0x07], dtype=np.uint32)  # by length: the code point's bits in the lead
_SHIFT = np.array([0, 18, 12, 6, 0], dtype=np.uint32)  # by length: to drop the bytes after the character
_CONTINUATION_MASK = np.array([0, 0, 0xC000, 0xC0C000, 0xC0C0C000], dtype=np.uint32)  # by length, on a 4-byte word
_CONTINUATION_BITS = np.array([0, 0, 0x8000, 0x808000, 0x80808000], dtype=np.uint32)
_SMALLEST = np.array([MAX_CODE_POINT, 0, 0x80, 0x800, 0x10000], dtype=np.uint32)  # by length: shorter forms exist
_FOUR = np.arange(4)


class InvalidUtf8(ValueError):
    """The bytes are not valid UTF-8 (Python's decoder then names the position and the reason)."""


def is_continuation(byte: int) -> bool:
    return 0x80 <= byte < 0xC0


def whole_prefix(data: bytes | bytearray | memoryview) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a multi-byte character."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        if not is_continuation(data[n - back]):
            return n - back if _LENGTH[data[n - back]] > back else n
    return n


def count(data: bytes, lo: int, hi: int) -> int:
    """Characters in ``data[lo:hi]`` if it is valid UTF-8: the bytes that are not continuation bytes."""
    total = 0
    for a in range(lo, hi, BLOCK):
        total += int(np.count_nonzero(np.frombuffer(data, np.int8, min(BLOCK, hi - a), a) >= -64))
    return total


def mostly_long_characters(data: bytes | bytearray, n: int) -> bool:
    """Whether three- and four-byte characters (CJK, emoji...) fill much of ``data[:n]``: decoding
    each of them on its own costs more than Python's decoder."""
    return 8 * int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8, count=n) >= 0xE0)) > n


class Table:
    """A value (0 = none) for each code point, laid out for :class:`Scanner`."""

    def __init__(self, dtype) -> None:
        self.by_pair = np.zeros(1 << 16, dtype=dtype)  # [first byte | second byte << 8]
        self.by_pair.reshape(256, 256)[:, 0x80:0xC0] = 1  # continuation bytes: any value but 0 (they are dropped)
        self.by_code_point = np.zeros(MAX_CODE_POINT, dtype=dtype)  # untouched pages cost no memory

    def set(self, code_points, values) -> None:
        points = np.asarray(code_points, dtype=np.int64)
        values = np.broadcast_to(np.asarray(values).astype(self.by_pair.dtype), points.shape)
        self.by_code_point[points] = values
        by_second_first = self.by_pair.reshape(256, 256)
        one = points < 0x80  # any second byte: a stray continuation byte fails the count in scan
        by_second_first[:, points[one]] = values[one]
        two = (points >= 0x80) & (points < 0x800)
        by_second_first[0x80 | (points[two] & 0x3F), 0xC0 | (points[two] >> 6)] = values[two]

    def by_byte(self) -> bytes:
        """For ``bytes.translate`` (uint8 values only): ASCII characters' values, 1 at continuation
        bytes (like ``by_pair``), 0 at lead bytes (their characters need decoding)."""
        table = np.zeros(256, dtype=np.uint8)
        table[:0x80], table[0x80:0xC0] = self.by_code_point[:0x80], 1
        return table.tobytes()


def decode_at(buf: np.ndarray, at: np.ndarray, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Code points and byte lengths of the characters starting at offsets ``at`` of ``buf``, which
    must end by ``end``."""
    # the four bytes from each start as one little-endian word: lead | next << 8 | ...
    words = buf.take(at[:, None] + _FOUR, mode="clip").view("<u4")[:, 0]
    lead = words & 0xFF
    length = _LENGTH[lead]
    valid = (length > 0) & (at + length <= end) & ((words & _CONTINUATION_MASK[length]) == _CONTINUATION_BITS[length])
    points = ((lead & _LEAD_BITS[length]) << 18 | (words >> 8 & 0x3F) << 12 | (words >> 16 & 0x3F) << 6
              | words >> 24 & 0x3F) >> _SHIFT[length]
    valid &= (points >= _SMALLEST[length]) & (points < MAX_CODE_POINT) & ((points < 0xD800) | (points > 0xDFFF))
    if not valid.all():
        raise InvalidUtf8
    return points, length


def first_of_each(points: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``points`` in order of first appearance, and where each first appears."""
    values, first = np.unique(points, return_index=True)
    order = np.argsort(first)
    return values[order], where[first[order]]


Learn = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def _prefer_heap_memory() -> None:
    """glibc's malloc serves blocks above its mmap threshold (128 KiB at first) with fresh pages,
    a page fault per 4 KiB, on every call; freeing one big block raises the threshold, so that the
    index arrays made for each block reuse heap memory instead (measured: 5x fewer page faults)."""
    np.empty(8 << 20, dtype=np.uint8)


class Scanner:
    """Maps UTF-8 bytes to one ``table`` value per character, reusing its buffers from call to call."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._values = np.empty(0, dtype=table.by_pair.dtype)  # per byte: the value of the character starting there
        self._starts = np.empty(0, dtype=bool)                 # per byte: whether a character starts there
        self._out = np.empty(0, dtype=table.by_pair.dtype)
        self._flags = np.empty(0, dtype=bool)
        _prefer_heap_memory()

    def scan(self, data: bytes, lo: int, hi: int, learn: Learn) -> np.ndarray:
        """The values of the characters in ``data[lo:hi]``, which must hold whole characters (a view
        of a buffer that the next call reuses).

        Characters without a value are passed to ``learn(code_points, byte_offsets, starts)``
        (distinct, in order of first appearance, offsets from ``lo``; ``starts`` marks the character
        starts up to there), which must give them values in the table. Raises :class:`InvalidUtf8`
        unless the bytes are valid UTF-8.
        """
        n = hi - lo
        if len(self._values) < n:
            self._values, self._starts, self._out, self._flags = (
                np.empty(n, dtype=a.dtype) for a in (self._values, self._starts, self._out, self._flags))
        values, starts = self._values[:n], self._starts[:n]
        count, values = self._map(data, lo, hi, values, starts, learn)
        if 16 * (n - count) < n:  # few continuation bytes: a mask copies long runs
            return values[starts]
        out, done = self._out[:count], 0
        for a in range(0, n, BLOCK):  # many: compress block by block (a mask would branch on each byte)
            kept = int(np.count_nonzero(starts[a:a + BLOCK]))
            np.compress(starts[a:a + BLOCK], values[a:a + BLOCK], out=out[done:done + kept])
            done += kept
        return out

    def _map(self, data: bytes | bytearray, lo: int, hi: int, values: np.ndarray, starts: np.ndarray,
             learn: Learn) -> tuple[int, np.ndarray]:
        """Fill ``starts`` for ``data[lo:hi]``; the number of characters and the value at each byte
        (in ``values``, or in a new array)."""
        table, n = self.table, hi - lo
        if n == 0:
            return 0, values
        buf = np.frombuffer(data, dtype=np.uint8)
        signed, flags = buf[lo:hi].view(np.int8), self._flags[:n]
        np.greater_equal(signed, -64, out=starts)  # not a continuation byte (0x80..0xBF)
        count = int(np.count_nonzero(starts))
        below_e0 = int(np.count_nonzero(np.less(signed, -32, out=flags)))  # 0x80..0xDF
        claimed = 0  # continuation bytes of the characters decoded one by one, beyond one each
        if table.by_pair.dtype == np.uint8 and 16 * (n - count) < n:
            # few multi-byte characters: a value per byte at memory speed, then decode those left at 0
            translated = data.translate(table.by_byte())
            values = np.frombuffer(translated if isinstance(translated, bytearray) else bytearray(translated),
                                   dtype=np.uint8, count=n, offset=lo)
            claimed = self._settle(buf, lo, hi, np.flatnonzero(np.equal(values, 0, out=flags)), values, starts, learn)
        else:  # the pair at each byte (overlapping little-endian uint16); the last reads the byte after hi, or 0
            pairs = np.ndarray((n - 1,), dtype="<u2", buffer=data, offset=lo, strides=(1,))
            values[n - 1] = table.by_pair[int(buf[hi - 1]) | (int(buf[hi]) << 8 if hi < len(buf) else 0)]
            pending: list[np.ndarray] = []  # offsets of characters to decode one by one
            waiting = 0
            for a in range(0, n, BLOCK):  # in blocks, so that what is learnt serves the next block
                b = min(a + BLOCK, n)
                table.by_pair.take(pairs[a:min(b, n - 1)], out=values[a:min(b, n - 1)])
                at = np.flatnonzero(np.equal(values[a:b], 0, out=flags[a:b]))
                if len(at):
                    pending.append(at + a)
                    waiting += len(at)
                if pending and (waiting >= _BATCH or b == n):
                    claimed += self._settle(buf, lo, hi, np.concatenate(pending), values, starts, learn)
                    pending, waiting = [], 0
        # every continuation byte must belong to a character: two-byte leads (0xC2..0xDF, the bytes
        # below 0xE0 that are not continuation bytes; 0xC0 and 0xC1 failed decoding) own one each
        if 2 * (n - count) != below_e0 + claimed:
            raise InvalidUtf8
        return count, values

    def _settle(self, buf: np.ndarray, lo: int, hi: int, at: np.ndarray, values: np.ndarray,
                starts: np.ndarray, learn: Learn) -> int:
        """Decode the characters at offsets ``at`` (from ``lo``) into ``values``, learning new ones,
        in batches (few calls, bounded memory); the continuation bytes they hold beyond one each."""
        claimed = 0
        for i in range(0, len(at), _BATCH):
            part = at[i:i + _BATCH]
            points, length = decode_at(buf, lo + part, hi)
            claimed += int((length - 1)[length > 2].sum())
            found = self.table.by_code_point[points]
            missing = found == 0
            if missing.any():
                learn(*first_of_each(points[missing], part[missing]), starts)
                found = self.table.by_code_point[points]
            values[part] = found
        return claimed
