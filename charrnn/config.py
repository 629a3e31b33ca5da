"""The model's architecture, as a plain record, and the choice lists of the options (no torch needed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# The recurrent cells, each with its number of gate blocks (a layer's weights have gates x rnn_size
# rows). The one list of cell types: everything else (choices, layout, engine, model) derives from it.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
MODEL_TYPES = tuple(GATES)
INIT_SCHEMES = ("torch-rnn", "xavier", "orthogonal", "normal")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BACKENDS = ("cuda", "mps")


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
