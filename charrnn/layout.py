"""The model's state-dict layout for a :class:`ModelConfig`: every key and shape, without torch.

One place knows how :class:`charrnn.model.CharRNN` names and shapes its tensors; the checkpoint
schema checks files against it, the CPU sampling engine reads weights by it, and a test holds
it equal to the real module's ``state_dict()``.
"""

from __future__ import annotations

from .config import GATES, MODEL_TYPES, ModelConfig  # noqa: F401  (the cell types, as the layout reads them)

# sanity caps for sizes read from files (checked before anything is built)
LIMITS = {"vocab_size": 0x110000, "wordvec_size": 1 << 16, "rnn_size": 1 << 16, "num_layers": 1024}
RNN_PARTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
NORM_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def rnn_key(config: ModelConfig, layer: int, part: str) -> str:
    """The key of ``part`` (weight_ih, weight_hh, bias_ih, bias_hh) of recurrent layer ``layer`` (from 0)."""
    return f"rnns.{layer}.{part}_l0" if config.batchnorm else f"rnns.0.{part}_l{layer}"


def norm_key(layer: int, part: str) -> str:
    """The key of ``part`` (one of NORM_PARTS) of the batch-norm layer after recurrent layer ``layer``."""
    return f"norms.{layer}.{part}"


def state_count(model_type: str) -> int:
    """How many tensors the recurrent state holds: (h, c) for an LSTM, h alone for the others."""
    return 2 if model_type == "lstm" else 1


def state_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every ``state_dict`` key of the model in its order, with its shape."""
    V, D, H, G = config.vocab_size, config.wordvec_size, config.rnn_size, GATES[config.model_type]
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (V, D)}
    for layer in range(config.num_layers):
        inputs = D if layer == 0 else H
        for part, shape in zip(RNN_PARTS, ((G * H, inputs), (G * H, H), (G * H,), (G * H,))):
            shapes[rnn_key(config, layer, part)] = shape
    if config.batchnorm:
        for layer in range(config.num_layers):
            for part in NORM_PARTS:
                shapes[norm_key(layer, part)] = () if part == "num_batches_tracked" else (H,)
    shapes["head.weight"], shapes["head.bias"] = (V, H), (V,)
    return shapes


def is_buffer(key: str) -> bool:
    """True for state that is not a trained parameter (batch-norm statistics)."""
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def is_integer(key: str) -> bool:
    """True for the one integer entry (batch norm's counter); all others are floating point."""
    return key.endswith("num_batches_tracked")


def parameter_shapes(config: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """The trained parameters in ``model.parameters()`` order (the optimizer's numbering)."""
    return [(k, s) for k, s in state_shapes(config).items() if not is_buffer(k)]
