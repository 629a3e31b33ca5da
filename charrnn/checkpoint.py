"""Checkpoints: ``<name>_<i>.json`` with torch-rnn's keys, and ``<name>_<i>.pt`` beside it.

The ``.pt`` file holds only tensors and plain values (architecture, vocabulary, weights and,
for ``--resume``, the optimizer, learning rate, iteration, carried hidden state and random
state). It is read with ``torch.load(weights_only=True)``, so a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from .config import ModelConfig
from .errors import CharRNNError
from .fileio import atomic_path, atomic_write, check_readable_file
from .vocab import Vocabulary

if TYPE_CHECKING:  # torch is imported only where a function needs it
    import torch

    from .model import CharRNN

from .ptreader import FORMAT, REFUSED, VERSION, parse_payload
_ITER = re.compile(r"_(\d+)\.(?:pt|t7)$")


@dataclass
class Checkpoint:
    """What a ``.pt`` checkpoint holds, as loaded."""

    path: Path
    model_config: ModelConfig
    vocab: Vocabulary
    model_state: dict
    iteration: int = 0
    train_state: dict = field(default_factory=dict)  # empty when saved without resume state
    info: dict = field(default_factory=dict)  # histories and options of an imported torch-rnn checkpoint

    def build_model(self, device: "torch.device | str" = "cpu") -> "CharRNN":
        from .model import CharRNN

        model = CharRNN(self.model_config)
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as exc:
            raise CharRNNError(f"{self.path}: weights do not fit the recorded architecture ({str(exc).splitlines()[0]})") from None
        return model.to(device)


def checkpoint_paths(name: str | Path, iteration: int) -> tuple[Path, Path]:
    """The ``.pt`` and ``.json`` paths for ``--checkpoint-name`` at an iteration."""
    stem = f"{name}_{iteration}"
    return Path(stem + ".pt"), Path(stem + ".json")


def existing_checkpoints(name: str | Path) -> list[Path]:
    """The ``.pt`` files of a checkpoint name, oldest iteration first."""
    name = Path(name)
    if not name.parent.is_dir():
        return []
    found = []
    for p in name.parent.glob(f"{name.name}_*.pt"):
        m = re.search(r"_(\d+)\.pt$", p.name)
        if m and p.name == f"{name.name}_{m.group(1)}.pt":
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def remove_stale_temporaries(name: str | Path) -> None:
    """Delete temporary files that a killed run left behind for this checkpoint name."""
    name = Path(name)
    if name.parent.is_dir():
        for tmp in name.parent.glob(f".{name.name}_*.tmp"):
            tmp.unlink(missing_ok=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a ``.pt`` path, its ``.json`` twin, or a directory (its newest)."""
    p = Path(path)
    if p.is_dir():
        candidates = [(int(m.group(1)), q.stat().st_mtime, q) for q in p.iterdir()
                      if (m := _ITER.search(q.name))]
        if not candidates:
            raise CharRNNError(f"no checkpoint (*_<iteration>.pt or .t7) in directory {p}")
        return max(candidates, key=lambda c: (c[1], c[0]))[2]
    if p.suffix == ".json" and p.with_suffix(".pt").exists():
        return p.with_suffix(".pt")
    return check_readable_file(p, "checkpoint")


def save_checkpoint(name: str | Path, iteration: int, model: CharRNN, vocab: Vocabulary,
                    history: dict, train_state: dict | None = None) -> Path:
    """Write ``<name>_<i>.pt`` then ``<name>_<i>.json`` atomically; return the ``.pt`` path."""
    import torch

    pt_path, json_path = checkpoint_paths(name, iteration)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.to_dict(),
        "vocab": {"tokens": list(vocab.tokens), "byte_mode": vocab.byte_mode},
        "model": {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                  for k, v in model.state_dict().items()},
        "iteration": iteration,
        "train_state": train_state or {},
    }
    with atomic_path(pt_path) as tmp:
        torch.save(payload, tmp)
    with atomic_write(json_path) as f:
        json.dump({**history, "i": iteration}, f)
    return pt_path


def _fail(path: Path, why: str) -> CharRNNError:
    return CharRNNError(f"{path}: {why}")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a charrnn checkpoint safely (no code runs); clear errors for anything else."""
    path = resolve_checkpoint(path)
    if path.suffix == ".t7":
        from .torch_rnn import load_t7_checkpoint
        return load_t7_checkpoint(path)
    if path.stat().st_size == 0:
        raise _fail(path, "the checkpoint file is empty")
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated, foreign or hostile files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported" in reason or "global" in reason.lower():
            raise _fail(path, REFUSED) from None
        raise _fail(path, f"not a readable charrnn checkpoint (truncated or foreign file: {reason[:160]})") from None
    p = parse_payload(path, data)
    return Checkpoint(path, p.config, p.vocab, p.model_state, p.iteration, p.train_state)
