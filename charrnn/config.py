"""The model's architecture, as a plain record (no torch needed to read or write it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    model_type: str = "lstm"
    wordvec_size: int = 64
    rnn_size: int = 128
    num_layers: int = 2
    dropout: float = 0.0
    batchnorm: bool = False

    def to_dict(self) -> dict:
        return asdict(self)
