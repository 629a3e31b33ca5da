"""The served models: checkpoints loaded torch-free where possible, directories followed as they grow."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..checkpoint import resolve_checkpoint
from ..config import ModelConfig
from ..errors import CharRNNError
from ..vocab import Vocabulary


@dataclass
class LoadedModel:
    """One checkpoint file's architecture, vocabulary and NumPy weights."""

    path: Path
    config: ModelConfig
    vocab: Vocabulary
    weights: dict[str, np.ndarray]
    iteration: int
    val_loss: float | None
    loaded_at: float = field(default_factory=time.time)


def load_model(path: Path) -> LoadedModel:
    """Read a ``.pt`` or a torch-rnn ``.t7`` without torch (NumPy weights)."""
    from ..checkpoint.io import float_weights, read_payload, recorded_val_loss

    p = read_payload(path)
    weights = float_weights(p)
    return LoadedModel(path, p.config, p.vocab, weights, p.iteration, recorded_val_loss(path))



class ServedModel:
    """A model name bound to a checkpoint file, or to a directory whose best checkpoint (of its newest run) it follows."""

    def __init__(self, name: str, source: str | Path, log=print, check_every: float = 1.0) -> None:
        self.name, self.source, self.log = name, Path(source), log
        self.follows = self.source.is_dir()
        self.check_every = check_every
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self.current = load_model(resolve_checkpoint(self.source))
        self.switches = 0

    def latest(self) -> LoadedModel:
        """The model to use for a new request: reloads when a followed directory has a newer checkpoint."""
        if not self.follows or time.monotonic() - self._checked < self.check_every:
            return self.current
        with self._lock:
            if time.monotonic() - self._checked < self.check_every:
                return self.current
            self._checked = time.monotonic()
            try:
                newest = resolve_checkpoint(self.source)
                if newest != self.current.path:
                    self.current = load_model(newest)
                    self.switches += 1
                    self.log(f"model {self.name}: now serving {newest} (iteration {self.current.iteration})")
            except CharRNNError as exc:  # a half-written or foreign file: keep serving the previous one
                self.log(f"model {self.name}: keeping {self.current.path} ({exc})")
        return self.current

    def describe(self) -> dict:
        m = self.current
        c = m.config
        return {
            "id": self.name, "object": "model", "created": int(m.loaded_at), "owned_by": "charrnn",
            "checkpoint": str(m.path), "follows": str(self.source) if self.follows else None,
            "architecture": {"model_type": c.model_type, "num_layers": c.num_layers, "rnn_size": c.rnn_size,
                             "wordvec_size": c.wordvec_size, "batchnorm": c.batchnorm},
            "vocab_size": len(m.vocab), "iteration": m.iteration, "val_loss": m.val_loss,
        }


def model_names(sources: list[str | Path]) -> list[str]:
    """A unique name per checkpoint: a file's stem, or a directory's name."""
    names: list[str] = []
    for src in sources:
        p = Path(src)
        base = (p.resolve().name if p.is_dir() else p.stem) or "model"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names
