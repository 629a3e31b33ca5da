"""The character vocabulary, in torch-rnn's JSON format.

Token ids start at 1 and follow the order of first appearance in the corpus. A token is a
Unicode code point, or in bytes mode a byte value; in the JSON a byte above 127 is named
``"[200]"`` so the file stays ASCII, exactly as torch-rnn's preprocess.py writes it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CharRNNError, CorruptFile
from .fileio import atomic_write, check_readable_file

_BYTE_NAME = re.compile(r"^\[(\d{1,3})\]$")
_ID = re.compile(r"^[1-9][0-9]{0,6}$")
MAX_TOKENS = 0x110000  # every Unicode code point
MAX_JSON_BYTES = 64 << 20
_SURROGATES = range(0xD800, 0xE000)
FIRST_ID = 1  # torch-rnn's HDF5 and JSON files count tokens from 1; PyTorch's embedding from 0


def to_model_ids(file_ids) -> np.ndarray:
    """The model's 0-based ids (int64) for torch-rnn's 1-based file ids: the one place the shift lives."""
    return np.asarray(file_ids, dtype=np.int64) - FIRST_ID


def to_file_ids(model_ids) -> np.ndarray:
    """torch-rnn's 1-based file ids (int64) for the model's 0-based ids."""
    return np.asarray(model_ids, dtype=np.int64) + FIRST_ID


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > 18:
        raise ValueError(f"number with {len(text)} digits")
    return int(text)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


@dataclass(frozen=True)
class Vocabulary:
    """Tokens in id order: ``tokens[k]`` has id ``k + 1``.

    ``tokens`` holds code points (text mode) or byte values (``byte_mode``).
    """

    tokens: tuple[int, ...]
    byte_mode: bool = False
    _lookup: np.ndarray = field(init=False, repr=False, compare=False)
    _values: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        top = 255 if self.byte_mode else 0x10FFFF
        if len(self.tokens) > MAX_TOKENS or not all(type(t) is int and 0 <= t <= top for t in self.tokens):
            raise CharRNNError(f"vocabulary tokens must be {'byte values' if self.byte_mode else 'code points'} "
                               f"in 0..{top}")
        if not self.byte_mode and any(t in _SURROGATES for t in self.tokens):
            raise CharRNNError("vocabulary holds a lone surrogate, which is not a character")
        if len(set(self.tokens)) != len(self.tokens):
            raise CharRNNError("vocabulary has duplicate tokens")
        size = max(256, max(self.tokens, default=0) + 1)
        lookup = np.zeros(size, dtype=np.uint32)  # 0 = unknown
        lookup[list(self.tokens)] = np.arange(1, len(self.tokens) + 1, dtype=np.uint32)
        object.__setattr__(self, "_lookup", lookup)
        object.__setattr__(self, "_values", np.array((0,) + self.tokens, dtype=np.uint32))  # value by id

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def id_dtype(self) -> np.dtype:
        """torch-rnn's HDF5 dtype: uint8 up to 255 tokens, else uint32."""
        return np.dtype(np.uint8) if len(self) <= 255 else np.dtype(np.uint32)

    # -- names, as written in the JSON -------------------------------------------------
    def token_name(self, token: int) -> str:
        if self.byte_mode and token > 127:
            return f"[{token}]"
        return chr(token)

    def to_json_dict(self) -> dict:
        names = [self.token_name(t) for t in self.tokens]
        return {
            "token_to_idx": {name: i for i, name in enumerate(names, 1)},
            "idx_to_token": {str(i): name for i, name in enumerate(names, 1)},
        }

    @classmethod
    def from_json_dict(cls, data: object, source: str = "vocabulary") -> "Vocabulary":
        """A vocabulary from torch-rnn's JSON object, every field checked (ids exactly 1..V)."""
        if not isinstance(data, dict) or "idx_to_token" not in data:
            raise CorruptFile(source, "not a torch-rnn vocabulary (no 'idx_to_token' key)")
        idx_to_token = data["idx_to_token"]
        if not isinstance(idx_to_token, dict) or not idx_to_token:
            raise CorruptFile(source, "'idx_to_token' must be a non-empty object")
        if len(idx_to_token) > MAX_TOKENS:
            raise CorruptFile(source, f"'idx_to_token' holds more than {MAX_TOKENS:,} tokens")
        if not all(isinstance(k, str) and _ID.match(k) for k in idx_to_token):
            raise CorruptFile(source, "'idx_to_token' keys must be integers from 1")
        by_id = {int(k): v for k, v in idx_to_token.items()}
        if len(by_id) != len(idx_to_token) or sorted(by_id) != list(range(1, len(by_id) + 1)):
            raise CorruptFile(source, f"token ids must run from 1 to {len(by_id)} without gaps")
        names = [by_id[i] for i in range(1, len(by_id) + 1)]
        if not all(isinstance(n, str) for n in names):
            raise CorruptFile(source, "every token must be a string")
        byte_mode = any(len(n) > 1 for n in names)
        tokens = []
        for name in names:
            if len(name) == 1:
                if byte_mode and ord(name) > 127:
                    raise CorruptFile(source, f"mixes byte tokens with the character {name!r}")
                if ord(name) in _SURROGATES:
                    raise CorruptFile(source, f"token {name!r} is a lone surrogate, not a character")
                tokens.append(ord(name))
                continue
            m = _BYTE_NAME.match(name[:8])
            if len(name) > 5 or not m or not 127 < int(m.group(1)) < 256:
                raise CorruptFile(source, f"token {name[:20]!r} is neither one character nor a byte name like '[200]'")
            tokens.append(int(m.group(1)))
        token_to_idx = data.get("token_to_idx")
        if token_to_idx is not None:
            expected = {n: i for i, n in enumerate(names, 1)}
            if not isinstance(token_to_idx, dict) or token_to_idx != expected or \
                    not all(type(v) is int for v in token_to_idx.values()):
                raise CorruptFile(source, "'token_to_idx' does not match 'idx_to_token'")
        try:
            return cls(tuple(tokens), byte_mode)
        except CorruptFile:
            raise
        except CharRNNError as exc:
            raise CorruptFile(source, str(exc)) from None

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        """Read a torch-rnn JSON vocabulary; bounded size, depth and numbers (it may come from a stranger)."""
        path = check_readable_file(path, "vocabulary JSON")
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CorruptFile(path, f"larger than {MAX_JSON_BYTES >> 20} MB: not a vocabulary")
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_int=_small_int, parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise CorruptFile(path, f"not valid JSON ({str(exc)[:160]})") from None
        except RecursionError:
            raise CorruptFile(path, "not valid JSON (nested too deeply)") from None
        return cls.from_json_dict(data, str(path))

    def save(self, path: str | Path) -> None:
        with atomic_write(path) as f:
            json.dump(self.to_json_dict(), f)

    # -- encoding and decoding ------------------------------------------------------------
    def encode(self, text: str | bytes) -> np.ndarray:
        """Token ids (int64) for ``text``; unknown characters are an error that names them."""
        if self.byte_mode:
            raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
            points = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
        else:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.zeros(len(points), dtype=np.int64)
        inside = points < len(self._lookup)
        ids[inside] = self._lookup[points[inside]]
        if (ids == 0).any():
            unknown = sorted({int(p) for p in points[ids == 0]})
            shown = ", ".join(repr(chr(p)) if not self.byte_mode else f"byte {p}" for p in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise CharRNNError(f"character(s) not in the model's vocabulary: {shown}{more}")
        return ids

    def decode(self, ids) -> str | bytes:
        """The text (or, in bytes mode, the bytes) for a sequence of token ids (from 1)."""
        values = self._values[np.asarray(ids, dtype=np.int64)]
        if self.byte_mode:
            return values.astype(np.uint8).tobytes()
        return values.tobytes().decode("utf-32-le")
