"""UTF-8 bytes to token values with NumPy, as strict as Python's codec and without making a str.

A character's value comes from a table indexed by the two bytes it starts with, read as one
little-endian uint16: one gather over the bytes settles ASCII and two-byte characters (accents,
Cyrillic, Greek, Hebrew, Arabic...). The few starts it leaves at 0 (three- and four-byte
characters such as curly quotes, dashes, the BOM and emoji; characters not in the table; invalid
lead bytes) are decoded on their own, still vectorised. Counting continuation bytes then proves
that every one of them belongs to a character, so invalid UTF-8 never passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CODE_POINT = 0x110000
PADDING = 4  # bytes a buffer needs after the last block: reads look up to 3 bytes ahead

_LENGTH = np.zeros(256, dtype=np.int64)  # bytes in a character with this lead byte; 0: not a lead
_LENGTH[:0x80], _LENGTH[0xC2:0xE0], _LENGTH[0xE0:0xF0], _LENGTH[0xF0:0xF5] = 1, 2, 3, 4
_LEAD_BITS = np.array([0, 0x7F, 0x1F, 0x0F, 0x07])
_SMALLEST = np.array([MAX_CODE_POINT, 0, 0x80, 0x800, 0x10000])  # by length: longer forms are invalid


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


def block_bounds(buf: np.ndarray, n: int, size: int):
    """(lo, hi) blocks of about ``size`` bytes covering ``buf[:n]``, each ending before a character start."""
    lo = 0
    while lo < n:
        hi = min(lo + max(size, 4), n)
        for _ in range(3):
            if hi < n and is_continuation(int(buf[hi])):
                hi -= 1
        yield lo, hi
        lo = hi


class Table:
    """A value (0 = none) for each code point, laid out for :func:`scan`."""

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


@dataclass
class Block:
    values: np.ndarray       # per byte: the character's value at its start (anything at continuation bytes)
    starts: np.ndarray       # per byte: True where a character starts
    decoded: np.ndarray      # byte offsets (in the block) of the characters decoded on their own
    code_points: np.ndarray  # their code points
    count: int               # characters in the block

    def missing(self) -> np.ndarray:
        """Which of the decoded characters have no value in the table."""
        return self.values[self.decoded] == 0

    def character_values(self) -> np.ndarray:
        """One value per character."""
        if 16 * (len(self.values) - self.count) < len(self.values):  # few continuation bytes
            return self.values[self.starts]
        return np.compress(self.starts, self.values)  # steadier than a mask when they are many


def decode_at(buf: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Code points and byte lengths of the characters starting at offsets ``at`` of ``buf``."""
    lead = buf[at]
    length = _LENGTH[lead]
    points = lead & _LEAD_BITS[length]
    valid = length > 0
    for k in (1, 2, 3):
        more = length > k
        byte = buf[at + k].astype(np.int64)
        valid &= ~more | ((byte & 0xC0) == 0x80)
        points = np.where(more, (points << 6) | (byte & 0x3F), points)
    valid &= (points >= _SMALLEST[length]) & (points < MAX_CODE_POINT) & ((points < 0xD800) | (points > 0xDFFF))
    if not valid.all():
        raise InvalidUtf8
    return points, length


def scan(table: Table, buf: np.ndarray, lo: int, hi: int) -> Block:
    """Values of the characters in ``buf[lo:hi]``: whole characters, followed by ``PADDING`` readable bytes."""
    n = hi - lo
    pairs = np.ndarray((n,), dtype="<u2", buffer=buf, offset=lo, strides=(1,))  # overlapping byte pairs
    values = table.by_pair.take(pairs)
    block = buf[lo:hi]
    starts = block.view(np.int8) >= -64  # not 0x80..0xBF
    decoded = np.flatnonzero(values == 0)
    points = np.empty(0, dtype=np.int64)
    claimed = 0  # continuation bytes owned by 3- and 4-byte characters
    if len(decoded):
        points, length = decode_at(buf, lo + decoded)
        values[decoded] = table.by_code_point[points]
        claimed = int((length - 1)[length > 2].sum())
    count = int(np.count_nonzero(starts))
    two_byte_leads = int(np.count_nonzero((block - np.uint8(0xC2)) < np.uint8(0xE0 - 0xC2)))
    if n - count != two_byte_leads + claimed:
        raise InvalidUtf8  # a continuation byte without a lead
    return Block(values, starts, decoded, points, count)
