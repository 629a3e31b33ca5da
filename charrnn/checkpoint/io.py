"""Checkpoint I/O: ``<name>_<i>.pt`` beside ``<name>_<i>.json`` (torch-rnn's keys); load, save, resolve.

The ``.pt`` file holds only tensors and plain values (architecture, vocabulary, weights and,
for ``--resume``, the optimizer, learning rate, carried hidden state, random state, histories
and options). Every ``.pt`` is read by charrnn's own torch-free reader (:mod:`charrnn.formats.pt`),
every ``.t7`` by :mod:`charrnn.formats.t7`; both payloads pass :func:`.schema.validate_payload`
before anything is built, so a checkpoint can neither run code nor make charrnn build or
allocate what its file does not hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import ModelConfig
from ..errors import CharRNNError, CorruptFile, InvalidInput, NotFound
from ..fileio import atomic_path, atomic_write, check_readable_file
from ..vocab import Vocabulary
from .names import best_checkpoint, checkpoint_paths, newest_checkpoint
from .schema import FORMAT, VERSION, Payload, validate_payload

if TYPE_CHECKING:  # torch is imported only where a function needs it
    import torch

    from ..model import CharRNN


@dataclass
class Checkpoint:
    """What a checkpoint holds, as loaded (tensors as torch tensors)."""

    path: Path
    model_config: ModelConfig
    vocab: Vocabulary
    model_state: dict
    iteration: int = 0
    train_state: dict = field(default_factory=dict)  # empty when saved without resume state
    info: dict = field(default_factory=dict)  # histories and options of an imported torch-rnn checkpoint

    def build_model(self, device: "torch.device | str" = "cpu") -> "CharRNN":
        """The model with these weights (their keys and shapes were checked when the file was read)."""
        from ..model import CharRNN

        model = CharRNN(self.model_config)
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as exc:
            raise CorruptFile(self.path, f"weights do not fit the recorded architecture "
                                         f"({str(exc).splitlines()[0]})") from None
        return model.to(device)


def resolve_checkpoint(path: str | Path, newest: bool = False) -> Path:
    """A checkpoint file from a ``.pt``/``.t7`` path, its ``.json`` twin, or a directory.

    A directory gives its newest run's best checkpoint (what a user samples), or with ``newest``
    its newest checkpoint (what a resume continues); see :mod:`charrnn.checkpoint.names`.
    """
    p = Path(path)
    if p.is_dir():
        found = newest_checkpoint(p) if newest else best_checkpoint(p)
        if found is None:
            raise NotFound(f"no checkpoint (*_<iteration>.pt or .t7) in directory {p}")
        return found
    if p.suffix == ".json" and p.with_suffix(".pt").exists():
        return p.with_suffix(".pt")
    return check_readable_file(p, "checkpoint")


def read_payload(path: str | Path) -> Payload:
    """A validated checkpoint (``.pt`` or ``.t7``) with NumPy tensors, without importing torch."""
    path = resolve_checkpoint(path)
    if path.suffix == ".t7":
        from ..formats.t7 import torch_rnn_payload
        data = torch_rnn_payload(path)
    else:
        from ..formats.pt import read_pt_data
        data = read_pt_data(path)
    return validate_payload(path, data)


def float_weights(payload: Payload) -> dict[str, np.ndarray]:
    """A payload's floating-point state as float32 arrays (what the CPU engine prepares)."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in payload.model_state.items()
            if np.asarray(v).dtype.kind == "f"}


def recorded_val_loss(path: Path) -> float | None:
    """The last validation loss in a checkpoint's ``.json`` twin, if it has one."""
    try:
        history = json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
        losses = history.get("val_loss_history") or []
        return float(losses[-1]) if losses else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def read_pt(path: str | Path) -> Payload:
    """A charrnn ``.pt`` checkpoint, its tensors as NumPy arrays, without torch (see :func:`read_payload`)."""
    return read_payload(path)


def _to_torch(value, done: dict | None = None):
    """``value`` with every NumPy array as a torch tensor (shared parts converted once)."""
    import torch

    done = {} if done is None else done
    if id(value) in done:
        return done[id(value)]
    if isinstance(value, np.ndarray):
        out = torch.from_numpy(np.require(value, requirements=["W", "C"]))
    elif isinstance(value, dict):
        out = type(value)((k, _to_torch(v, done)) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        out = type(value)(_to_torch(v, done) for v in value)
    else:
        return value
    done[id(value)] = out
    return out


def _check_rng(path: Path, state: dict) -> None:
    import torch

    if state.get("rng_cpu") is None:
        return
    try:
        torch.Generator().set_state(state["rng_cpu"])
    except (RuntimeError, TypeError, ValueError):
        raise CorruptFile(path, "damaged checkpoint: 'train_state.rng_cpu' is not a valid random-generator "
                                "state") from None


def load_checkpoint(path: str | Path, newest: bool = False) -> Checkpoint:
    """Load a checkpoint safely (no code runs, nothing unchecked is built); clear errors otherwise.

    A directory gives its best checkpoint, or its newest with ``newest`` (:func:`resolve_checkpoint`).
    """
    path = resolve_checkpoint(path, newest)
    p = read_payload(path)
    train_state = _to_torch(p.train_state)
    _check_rng(path, train_state)
    return Checkpoint(path, p.config, p.vocab, _to_torch(dict(p.model_state)), p.iteration, train_state, p.info)


def save_checkpoint(name: str | Path, iteration: int, model: "CharRNN", vocab: Vocabulary,
                    history: dict, train_state: dict | None = None) -> Path:
    """Write ``<name>_<i>.pt`` then ``<name>_<i>.json`` atomically; return the ``.pt`` path."""
    import torch

    pt_path, json_path = checkpoint_paths(name, iteration)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.to_dict(),
        "vocab": vocab.to_checkpoint_dict(),
        "model": {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                  for k, v in model.state_dict().items()},
        "iteration": iteration,
        "train_state": _on_cpu(train_state or {}),
    }
    with atomic_path(pt_path) as tmp:
        torch.save(payload, tmp)
    try:
        with atomic_write(json_path) as f:
            json.dump({**history, "i": iteration}, f)
    except (TypeError, ValueError) as exc:  # a history that JSON cannot hold
        raise CharRNNError(f"cannot write {json_path}: {exc}") from None
    return pt_path


def _on_cpu(value):
    """``value`` with every tensor moved to the CPU (a GPU run's Adam state is CUDA tensors, which a
    plain ``torch.load`` on a CPU-only machine refuses)."""
    if hasattr(value, "is_cuda") and hasattr(value, "cpu"):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def convert_checkpoint(source: str | Path, name: str | Path, overwrite: bool = False) -> Path:
    """Write a checkpoint (a torch-rnn ``.t7``, say) as ``<name>_<iteration>.pt`` and ``.json``.

    The iteration comes from the validated file; existing files are replaced only with ``overwrite``.
    """
    ckpt = load_checkpoint(source)
    targets = checkpoint_paths(name, ckpt.iteration)
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise InvalidInput("overwrite", f"is needed to replace the existing {existing[0]} (or choose another output name)")
    history = {"opt": ckpt.info.get("opt", {}), **{k: v for k, v in ckpt.info.items() if k != "opt"}}
    return save_checkpoint(name, ckpt.iteration, ckpt.build_model(), ckpt.vocab, history)
