"""``charrnn eval``: a checkpoint's mean loss over a whole split (torch-rnn's eval.lua)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import load_checkpoint
from .data import open_batches, split_sizes
from .device import select_device
from .errors import Conflict, CorruptFile, InvalidInput
from .precision import recorded_precision
from .training.step import evaluate
from .vocab import Vocabulary

MAX_BATCH_TOKENS = 1 << 22  # N x T of one evaluation batch


@dataclass(frozen=True)
class EvalResult:
    split: str
    loss: float  # nats per token (per character for a character vocabulary)
    batches: int
    batch_size: int
    seq_length: int
    chars_per_token: float = 1.0  # of the split: word tokens are several characters

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2)

    @property
    def loss_per_char(self) -> float:
        """Nats per character: comparable between runs with different tokens."""
        return self.loss / self.chars_per_token

    @property
    def bits_per_char(self) -> float:
        return self.loss_per_char / math.log(2)


def evaluate_checkpoint(checkpoint: str | Path, input_h5: str | Path | None = None, split: str = "val",
                        input_json: str | Path | None = None, batch_size: int | None = None,
                        seq_length: int | None = None, gpu: int | None = -1, gpu_backend: str = "cuda") -> EvalResult:
    """Mean cross-entropy of a checkpoint (charrnn ``.pt`` or torch-rnn ``.t7``) over ``split``.

    Batch size, sequence length and precision default to the ones the checkpoint was trained
    with, as do the data files when they still exist.
    """
    ckpt = load_checkpoint(checkpoint)
    opt = (ckpt.train_state.get("config") or ckpt.info.get("opt") or {})
    opt = opt if isinstance(opt, dict) else {}
    input_h5 = input_h5 or opt.get("input_h5")
    if not input_h5 or not isinstance(input_h5, str):
        raise InvalidInput("input_h5", "is required: the checkpoint does not record its data file")
    if input_json and Vocabulary.load(input_json) != ckpt.vocab:
        raise InvalidInput("input_json", f"{input_json} is not the vocabulary {ckpt.path} was trained with")
    batch_size = batch_size or _stored_size(ckpt.path, opt, "batch_size")
    seq_length = seq_length or _stored_size(ckpt.path, opt, "seq_length")
    if batch_size * seq_length > MAX_BATCH_TOKENS:
        raise Conflict(("batch_size", "seq_length"), f"make {batch_size * seq_length:,} tokens per batch, more "
                                                     f"than {MAX_BATCH_TOKENS:,}; choose smaller ones")
    device = select_device(gpu, gpu_backend)
    batches = open_batches(input_h5, split, ckpt.vocab, batch_size, seq_length)
    if batches is None:
        num = split_sizes(input_h5, (split,))[split]
        raise InvalidInput("seq_length", f"{seq_length} is too long: the {split} split has only {num} tokens, "
                                         "too few for one sequence")
    with batches:
        loss = evaluate(ckpt.build_model(device), batches, device, recorded_precision(opt, device))
    return EvalResult(split, loss, batches.num_batches, batches.batch_size, seq_length,
                      chars_per_token(input_h5, split, ckpt.vocab))


def chars_per_token(input_h5: str | Path, split: str, vocab: Vocabulary) -> float:
    """Mean characters per token of a split (1 for a character vocabulary; the end token counts as
    its separator)."""
    if vocab.plain:
        return 1.0
    import numpy as np

    from .data import read_chunks
    lengths, tokens, chars = vocab.char_lengths(), 0, 0
    for chunk in read_chunks(input_h5, split, len(vocab)):
        tokens += len(chunk)
        chars += int(np.dot(np.bincount(chunk, minlength=len(lengths)), lengths))
    return chars / max(tokens, 1)


def _stored_size(path: Path, opt: dict, name: str, default: int = 50) -> int:
    """A batch size or sequence length recorded in a checkpoint's options (checked: it comes from the file)."""
    value = opt.get(name) or default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_BATCH_TOKENS:
        raise CorruptFile(path, f"the recorded {name} {value!r:.40} is not a whole number in 1..{MAX_BATCH_TOKENS}; "
                                f"pass --{name.replace('_', '-')}")
    return value
