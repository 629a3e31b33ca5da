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

from . import tokens
from .errors import CharRNNError, CorruptFile
from .fileio import atomic_write, check_readable_file

_BYTE_NAME = re.compile(r"^\[(\d{1,3})\]$")
_ID = re.compile(r"^[1-9][0-9]{0,6}$")
MAX_TOKENS = 0x110000  # every Unicode code point
MAX_JSON_BYTES = 64 << 20
_SURROGATES = range(0xD800, 0xE000)
_MAX_NAME = tokens.MAX_WORD  # characters in a word token
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

    ``tokens`` holds code points (text mode) or byte values (``byte_mode``); a word vocabulary
    (``charrnn preprocess --tokens words``) also holds strings of two or more characters. With
    ``documents`` (``lines`` or ``blank-lines``) the token of id ``end_token``, named ``<END>``,
    ends a document and stands for the separator (one newline, or a blank line) in text.
    """

    tokens: tuple[int | str, ...]
    byte_mode: bool = False
    end_token: int | None = None
    documents: str | None = None
    _lookup: np.ndarray = field(init=False, repr=False, compare=False)
    _values: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        top = 255 if self.byte_mode else 0x10FFFF
        chars = [t for t in self.tokens if type(t) is int]
        if len(self.tokens) > MAX_TOKENS or not all(0 <= t <= top for t in chars):
            raise CharRNNError(f"vocabulary tokens must be {'byte values' if self.byte_mode else 'code points'} "
                               f"in 0..{top}")
        if len(chars) < len(self.tokens):
            self._check_strings()
        if not self.byte_mode and any(t in _SURROGATES for t in chars):
            raise CharRNNError("vocabulary holds a lone surrogate, which is not a character")
        if len(set(self.tokens)) != len(self.tokens):
            raise CharRNNError("vocabulary has duplicate tokens")
        size = max(256, max(chars, default=0) + 1)
        lookup = np.zeros(size, dtype=np.uint32)  # 0 = unknown
        ids = [i for i, t in enumerate(self.tokens, 1) if type(t) is int]
        lookup[chars] = np.array(ids, dtype=np.uint32)
        object.__setattr__(self, "_lookup", lookup)
        values = (0,) + tuple(t if type(t) is int else 0 for t in self.tokens)
        object.__setattr__(self, "_values", np.array(values, dtype=np.uint32))  # value by id
        object.__setattr__(self, "_plain", len(chars) == len(self.tokens))

    def _check_strings(self) -> None:
        strings = [(i, t) for i, t in enumerate(self.tokens, 1) if type(t) is not int]
        if self.byte_mode or not all(type(t) is str and 2 <= len(t) <= _MAX_NAME for _, t in strings):
            raise CharRNNError(f"vocabulary tokens must be code points or strings of 2..{_MAX_NAME} characters")
        ends = [i for i, t in strings if t == tokens.END_NAME]
        if ends != ([self.end_token] if self.end_token else []):
            raise CharRNNError(f"the end token {tokens.END_NAME} must appear once, at the recorded end_token id")
        if (self.end_token is None) != (self.documents is None) or \
                (self.documents is not None and self.documents not in tokens.SEPARATORS):
            raise CharRNNError("an end token needs a documents mode ('lines' or 'blank-lines'), and the reverse")

    @property
    def plain(self) -> bool:
        """Whether every token is one character (or byte): torch-rnn's own kind of vocabulary."""
        return self.__dict__["_plain"]

    @property
    def has_words(self) -> bool:
        return any(type(t) is str and t != tokens.END_NAME for t in self.tokens)

    @property
    def separator(self) -> str:
        """The text an end token stands for ('' without documents)."""
        return tokens.SEPARATORS.get(self.documents or "", "")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def id_dtype(self) -> np.dtype:
        """torch-rnn's HDF5 dtype: uint8 up to 255 tokens, else uint32."""
        return np.dtype(np.uint8) if len(self) <= 255 else np.dtype(np.uint32)

    # -- names, as written in the JSON -------------------------------------------------
    def token_name(self, token: int | str) -> str:
        if type(token) is str:
            return token
        if self.byte_mode and token > 127:
            return f"[{token}]"
        return chr(token)

    def to_json_dict(self) -> dict:
        """torch-rnn's two keys, plus (ignored by torch-rnn's loaders) what word and document
        vocabularies need: ``token_type``, ``end_token``, ``end_token_idx`` and ``documents``."""
        names = [self.token_name(t) for t in self.tokens]
        out: dict = {
            "token_to_idx": {name: i for i, name in enumerate(names, 1)},
            "idx_to_token": {str(i): name for i, name in enumerate(names, 1)},
        }
        if self.has_words:
            out["token_type"] = "words"
        if self.end_token is not None:
            out.update(end_token=tokens.END_NAME, end_token_idx=self.end_token, documents=self.documents)
        return out

    def to_checkpoint_dict(self) -> dict:
        """The vocabulary as a checkpoint stores it (torch-rnn-style vocabularies keep the old two keys)."""
        out: dict = {"tokens": list(self.tokens), "byte_mode": self.byte_mode}
        if self.end_token is not None:
            out.update(end_token=self.end_token, documents=self.documents)
        return out

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
        end, documents = _end_token(data, names, source)
        words = data.get("token_type", "chars")
        if words not in ("chars", "words"):
            raise CorruptFile(source, f"'token_type' must be 'chars' or 'words' (found {str(words)[:20]!r})")
        words = words == "words"
        byte_mode = not words and any(len(n) > 1 for i, n in enumerate(names, 1) if i != end)
        tokens = [_token(name, byte_mode, words, source) if i != end else name for i, name in enumerate(names, 1)]
        token_to_idx = data.get("token_to_idx")
        if token_to_idx is not None:
            expected = {n: i for i, n in enumerate(names, 1)}
            if not isinstance(token_to_idx, dict) or token_to_idx != expected or \
                    not all(type(v) is int for v in token_to_idx.values()):
                raise CorruptFile(source, "'token_to_idx' does not match 'idx_to_token'")
        try:
            return cls(tuple(tokens), byte_mode, end, documents)
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
        """Token ids (int64) for ``text``; unknown characters are an error that names them.

        A word vocabulary cuts the text into segments as preprocessing did (:mod:`charrnn.tokens`);
        with documents, each separator (a newline, or a blank line) becomes the end token."""
        if self.byte_mode:
            raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
            points = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
        else:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if not self.plain:
            return self._encode_segments(points)
        ids = np.zeros(len(points), dtype=np.int64)
        inside = points < len(self._lookup)
        ids[inside] = self._lookup[points[inside]]
        if (ids == 0).any():
            self._unknown(points[ids == 0])
        return ids

    def _unknown(self, points: np.ndarray):
        unknown = sorted({int(p) for p in points})
        shown = ", ".join(repr(chr(p)) if not self.byte_mode else f"byte {p}" for p in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise CharRNNError(f"character(s) not in the model's vocabulary: {shown}{more}")

    def _encode_segments(self, points: np.ndarray) -> np.ndarray:
        char_ids, word_hashes, word_ids = self.segment_tables()
        points = tokens.mark_documents(points.astype(np.uint32), self.documents)
        known = char_ids[points] != 0
        if not known.all():
            self._unknown(points[~known])
        return tokens.encode_points(points, char_ids, word_hashes, word_ids).astype(np.int64)

    def segment_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(id by code point, end mark included; sorted word hashes; their ids), made once."""
        cached = self.__dict__.get("_segment_tables")
        if cached is None:
            char_ids = np.zeros(tokens.END_POINT + 1, dtype=np.uint32)  # untouched pages cost no memory
            char_ids[:len(self._lookup)] = self._lookup
            if self.end_token is not None:
                char_ids[tokens.END_POINT] = self.end_token
            words = [(tokens.hash_text(t), i) for i, t in enumerate(self.tokens, 1)
                     if type(t) is str and i != self.end_token]
            words.sort()
            cached = (char_ids, np.array([h for h, _ in words], dtype=np.uint64),
                      np.array([i for _, i in words], dtype=np.uint32))
            object.__setattr__(self, "_segment_tables", cached)
        return cached

    def token_text(self, token_id: int) -> str:
        """The text of one token (from 1); the end token is its separator."""
        token = self.tokens[token_id - 1]
        if token_id == self.end_token:
            return self.separator
        return token if type(token) is str else chr(token)

    def decode(self, ids) -> str | bytes:
        """The text (or, in bytes mode, the bytes) for a sequence of token ids (from 1)."""
        if not self.plain:
            texts = self.__dict__.get("_texts")
            if texts is None:
                texts = [""] + [self.token_text(i) for i in range(1, len(self.tokens) + 1)]
                object.__setattr__(self, "_texts", texts)
            return "".join([texts[i] for i in np.asarray(ids, dtype=np.int64).tolist()])
        values = self._values[np.asarray(ids, dtype=np.int64)]
        if self.byte_mode:
            return values.astype(np.uint8).tobytes()
        return values.tobytes().decode("utf-32-le")

    def char_lengths(self) -> np.ndarray:
        """Characters (bytes in bytes mode) of each token by file id (index 0 unused)."""
        if self.plain:
            return np.ones(len(self.tokens) + 1, dtype=np.int64)
        return np.array([0] + [len(self.token_text(i)) for i in range(1, len(self.tokens) + 1)], dtype=np.int64)


def _end_token(data: dict, names: list[str], source: str) -> tuple[int | None, str | None]:
    """The end token's id and documents mode recorded in a JSON vocabulary, checked."""
    name = data.get("end_token")
    if name is None:
        return None, None
    idx, documents = data.get("end_token_idx"), data.get("documents", "lines")
    if name != tokens.END_NAME:
        raise CorruptFile(source, f"the end token must be named {tokens.END_NAME!r} (found {str(name)[:20]!r})")
    if type(idx) is not int or not 1 <= idx <= len(names) or names[idx - 1] != name:
        raise CorruptFile(source, f"the end token {name} is missing: 'end_token_idx' {str(idx)[:20]} does not name it")
    if documents not in tokens.SEPARATORS:
        raise CorruptFile(source, f"'documents' must be 'lines' or 'blank-lines' (found {str(documents)[:20]!r})")
    return idx, documents


def _token(name: str, byte_mode: bool, words: bool, source: str) -> int | str:
    if len(name) == 1:
        if byte_mode and ord(name) > 127:
            raise CorruptFile(source, f"mixes byte tokens with the character {name!r}")
        if ord(name) in _SURROGATES:
            raise CorruptFile(source, f"token {name!r} is a lone surrogate, not a character")
        return ord(name)
    if words:
        return name
    m = _BYTE_NAME.match(name[:8])
    if len(name) > 5 or not m or not 127 < int(m.group(1)) < 256:
        raise CorruptFile(source, f"token {name[:20]!r} is neither one character nor a byte name like '[200]'")
    return int(m.group(1))
