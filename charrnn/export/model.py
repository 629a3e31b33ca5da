"""What both exports need from a checkpoint: architecture, vocabulary, prepared weights, metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from ..checkpoint.io import float_weights, read_payload, recorded_val_loss, resolve_checkpoint
from ..config import ModelConfig
from ..sampling.engine import PreparedModel
from ..vocab import Vocabulary


@dataclass
class ExportModel:
    """A checkpoint read through the safe readers, with the engine's prepared arrays."""

    name: str
    path: Path
    config: ModelConfig
    vocab: Vocabulary
    prepared: PreparedModel
    iteration: int
    val_loss: float | None

    def info(self) -> dict:
        """The fields ``charrnn serve``'s ``/v1/models`` gives (the file name instead of its full path)."""
        c = self.config
        return {
            "id": self.name, "object": "model", "created": int(self.path.stat().st_mtime), "owned_by": "charrnn",
            "checkpoint": self.path.name, "follows": None,
            "architecture": {"model_type": c.model_type, "num_layers": c.num_layers, "rnn_size": c.rnn_size,
                             "wordvec_size": c.wordvec_size, "batchnorm": c.batchnorm},
            "vocab_size": len(self.vocab), "iteration": self.iteration, "val_loss": self.val_loss,
        }

    def state_size(self) -> int:
        """Floats of recurrent state per row: h for every layer, and c too for an LSTM."""
        m = self.prepared
        return (2 if m.kind == "lstm" else 1) * m.L * m.H


def load_export_model(source: str | Path) -> ExportModel:
    """Read a ``.pt``, a ``.t7`` or a directory's newest checkpoint, torch-free."""
    source = Path(source)
    path = resolve_checkpoint(source)
    payload = read_payload(path)
    weights = float_weights(payload)
    name = (source.resolve().name if source.is_dir() else path.stem) or "model"
    return ExportModel(name, path, payload.config, payload.vocab, PreparedModel(payload.config, weights),
                       payload.iteration, recorded_val_loss(path))

