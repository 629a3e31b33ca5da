"""Every option of ``charrnn eval``, defined once (no torch needed); the command line builds its flags from them."""

from __future__ import annotations

from dataclasses import dataclass

from .config import BACKENDS
from .options import GPU_HELP, POSITIVE, option

SPLITS = ("val", "test", "train")


@dataclass
class EvalOptions:
    """The options of ``charrnn eval`` (torch-rnn's eval.lua, plus the split)."""

    checkpoint: str = option("", "A charrnn (.pt) or torch-rnn (.t7) checkpoint.", kind="path")
    input_h5: str | None = option(None, "HDF5 file [default: the one the checkpoint was trained on].", kind="path")
    input_json: str | None = option(None, "Optional: check that this vocabulary matches the checkpoint.", kind="path")
    split: str = option("val", "The split to evaluate.", choices=SPLITS)
    batch_size: int | None = option(None, "[default: the checkpoint's]", range=POSITIVE)
    seq_length: int | None = option(None, "[default: the checkpoint's]", range=POSITIVE)
    gpu: int = option(-1, GPU_HELP.split(";")[0] + ".")
    gpu_backend: str = option("cuda", "GPU backend.", choices=BACKENDS)
