"""``charrnn eval``: a checkpoint's mean loss over a whole split (torch-rnn's eval.lua)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import load_checkpoint
from .data import load_splits, make_batches
from .device import select_device
from .errors import CharRNNError
from .precision import recorded_precision
from .training import evaluate
from .vocab import Vocabulary


@dataclass(frozen=True)
class EvalResult:
    split: str
    loss: float  # nats per character
    batches: int
    batch_size: int
    seq_length: int

    @property
    def bits_per_char(self) -> float:
        return self.loss / math.log(2)


def evaluate_checkpoint(checkpoint: str | Path, input_h5: str | Path | None = None, split: str = "val",
                        input_json: str | Path | None = None, batch_size: int | None = None,
                        seq_length: int | None = None, gpu: int | None = -1, gpu_backend: str = "cuda") -> EvalResult:
    """Mean cross-entropy of a checkpoint (charrnn ``.pt`` or torch-rnn ``.t7``) over ``split``.

    Batch size, sequence length and precision default to the ones the checkpoint was trained
    with, as do the data files when they still exist.
    """
    ckpt = load_checkpoint(checkpoint)
    opt = (ckpt.train_state.get("config") or ckpt.info.get("opt") or {})
    input_h5 = input_h5 or opt.get("input_h5")
    if not input_h5:
        raise CharRNNError("--input-h5 is required: the checkpoint does not record its data file")
    if input_json and Vocabulary.load(input_json) != ckpt.vocab:
        raise CharRNNError(f"{input_json} is not the vocabulary {ckpt.path} was trained with")
    batch_size = batch_size or int(opt.get("batch_size") or 50)
    seq_length = seq_length or int(opt.get("seq_length") or 50)
    device = select_device(gpu, gpu_backend)
    ids = load_splits(input_h5, ckpt.vocab, (split,))[split]
    batches = make_batches(ids, batch_size, seq_length, split)
    if batches is None:
        raise CharRNNError(f"the {split} split has only {len(ids)} tokens: too few for one sequence of {seq_length}")
    loss = evaluate(ckpt.build_model(device), batches, device, recorded_precision(opt, device))
    return EvalResult(split, loss, batches.num_batches, batches.batch_size, seq_length)
