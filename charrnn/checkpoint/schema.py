"""The checkpoint schema: one validation of the plain payload that every reader produces.

charrnn's ``.pt`` reader and the ``.t7`` converter (and ``torch.load(weights_only=True)``,
should a caller use it) all yield the same plain dict::

    {"format": "charrnn-checkpoint", "version": 1, "model_config": {...}, "vocab": {...},
     "model": {key: array}, "iteration": int, "train_state": {...} or {}, "info": {...}}

:func:`validate_payload` checks it field by field before anything is built: the architecture
against sane limits, every weight's key and shape against :mod:`charrnn.layout`, the
vocabulary, and the resume state (optimizer against the model's parameters, RNG state,
carried hidden state, histories, options). Every problem is a :class:`CorruptFile` that
names the field, so every command refuses the same file with the same message. Arrays may
be NumPy arrays or torch tensors; this module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..config import ModelConfig
from ..errors import CharRNNError, CorruptFile
from ..layout import LIMITS, MODEL_TYPES, is_integer, state_shapes
from ..vocab import Vocabulary
from .resume import validate_train_state
from .values import Fail, array_info, check_plain, float_array, is_int, is_number

FORMAT = "charrnn-checkpoint"
VERSION = 1


@dataclass
class Payload:
    """A checkpoint's validated contents (tensors as NumPy arrays or torch tensors)."""

    config: ModelConfig
    vocab: Vocabulary
    model_state: dict
    iteration: int
    train_state: dict = field(default_factory=dict)  # empty when saved without resume state
    info: dict = field(default_factory=dict)  # options and histories of an imported torch-rnn checkpoint


def _model_config(fail, data) -> ModelConfig:
    if not isinstance(data, dict):
        raise fail("model_config", "is missing or not a table")
    known = {f.name for f in fields(ModelConfig)}
    for key in data:
        if key not in known:
            raise fail(f"model_config.{key}", "is not a known architecture field")
    if "vocab_size" not in data:
        raise fail("model_config.vocab_size", "is missing")
    for name, high in LIMITS.items():
        if name in data and not (is_int(data[name]) and 1 <= data[name] <= high):
            raise fail(f"model_config.{name}", f"must be a whole number in 1..{high} (found {data[name]!r:.40})")
    if "model_type" in data and data["model_type"] not in MODEL_TYPES:
        raise fail("model_config.model_type", f"must be one of {', '.join(MODEL_TYPES)} (found {data['model_type']!r:.40})")
    dropout = data.get("dropout", 0.0)
    if not (is_number(dropout) and 0 <= dropout < 1):
        raise fail("model_config.dropout", f"must be a number in [0, 1) (found {dropout!r:.40})")
    if data.get("batchnorm", False) not in (True, False):  # 0 and 1 compare equal to the booleans
        raise fail("model_config.batchnorm", f"must be true or false (found {data['batchnorm']!r:.40})")
    return ModelConfig(**{**data, **{k: int(data[k]) for k in LIMITS if k in data},
                          "dropout": float(dropout), "batchnorm": bool(data.get("batchnorm", False))})


def _vocab(fail, data, config: ModelConfig) -> Vocabulary:
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), (list, tuple)):
        raise fail("vocab.tokens", "is missing or not a list")
    tokens = data["tokens"]
    if not all(is_int(t) or isinstance(t, str) for t in tokens) or data.get("byte_mode") not in (True, False):
        raise fail("vocab", "must hold whole-number (or word) tokens and a true/false byte_mode")
    if len(tokens) != config.vocab_size:
        raise fail("vocab.tokens", f"holds {len(tokens)} tokens but the model's vocab_size is {config.vocab_size}")
    end, documents = data.get("end_token"), data.get("documents")
    if not (end is None or is_int(end)) or not (documents is None or isinstance(documents, str)):
        raise fail("vocab.end_token", "must be a token id, with a documents mode")
    try:
        return Vocabulary(tuple(t if isinstance(t, str) else int(t) for t in tokens), bool(data["byte_mode"]),
                          None if end is None else int(end), documents)
    except CharRNNError as exc:
        raise fail("vocab.tokens", f"is not a valid vocabulary ({exc})") from None


def describe(config: ModelConfig) -> str:
    bn = ", batchnorm" if config.batchnorm else ""
    return f"{config.model_type} {config.num_layers}x{config.rnn_size}, embedding {config.wordvec_size}{bn}"


def _weights(fail, model, config: ModelConfig) -> dict:
    if not isinstance(model, dict):
        raise fail("model", "is missing or not a table of tensors")
    expected = state_shapes(config)
    for key in model:
        if key not in expected:
            raise fail(f"model.{key}", f"is not a weight of the stored architecture ({describe(config)}); "
                                       "the configuration and the weights do not match")
    for key, shape in expected.items():
        if key not in model:
            raise fail(f"model.{key}", f"is missing: the stored architecture ({describe(config)}) needs "
                                       f"{len(expected)} tensors and the file holds {len(model)}")
        value = model[key]
        if is_integer(key):
            info = array_info(value)
            if info is None or info[1] not in "iu" or tuple(info[0]) != shape:
                raise fail(f"model.{key}", "must be an integer scalar")
        else:
            float_array(fail, f"model.{key}", value, shape)
    return model


def validate_payload(path: str | Path, data: object) -> Payload:
    """Check a payload's format, version, architecture, weights, vocabulary and resume state."""
    path = Path(path)
    fail = Fail(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CorruptFile(path, "not a charrnn checkpoint")
    version = data.get("version")
    if not is_int(version) or version < 1:
        raise fail("version", "must be a whole number >= 1")
    if version > VERSION:
        raise CorruptFile(path, f"checkpoint format version {version} is newer than this charrnn understands "
                                f"(version {VERSION}); upgrade charrnn")
    config = _model_config(fail, data.get("model_config"))
    vocab = _vocab(fail, data.get("vocab"), config)
    weights = _weights(fail, data.get("model"), config)
    iteration = data.get("iteration", 0)
    if not (is_int(iteration) and 0 <= iteration < 2 ** 53):
        raise fail("iteration", "must be a whole number >= 0")
    train_state = validate_train_state(fail, data.get("train_state"), config)
    info = data.get("info") or {}
    if not isinstance(info, dict):
        raise fail("info", "must be a table")
    check_plain(fail, "info", info)
    return Payload(config, vocab, weights, int(iteration), train_state, info)

