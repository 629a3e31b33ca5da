"""Deprecated: the CPU sampling engine is :mod:`charrnn.engine` (per-row parameters, numba or NumPy)."""

from __future__ import annotations

import warnings

import numpy as np

from .engine import Engine, SamplingParams, numpy_weights

__all__ = ["NumpyEngine", "numpy_weights"]


class NumpyEngine:
    """Deprecated shim over :class:`charrnn.engine.Engine`: ``K`` streams with one temperature.

    ``feed(tokens)`` advances every stream by one token; ``choose()`` draws the next tokens.
    """

    def __init__(self, config, weights: dict, streams: int = 1, temperature: float = 1.0, argmax: bool = False,
                 seed: int | None = None) -> None:
        warnings.warn("charrnn.fastsample is deprecated; use charrnn.engine.Engine", DeprecationWarning, stacklevel=2)
        self.engine = Engine(config, weights, streams, backend="numpy")
        self.slots = np.array([self.engine.open(SamplingParams(0.0 if argmax else temperature,
                                                               seed=None if seed is None else seed + j))
                               for j in range(streams)])

    @classmethod
    def from_model(cls, model, streams: int = 1, temperature: float = 1.0, argmax: bool = False,
                   seed: int | None = None) -> "NumpyEngine":
        return cls(model.config, numpy_weights(model), streams, temperature, argmax, seed)

    def feed(self, tokens: np.ndarray) -> None:
        self.engine.feed(self.slots, tokens)

    def choose(self) -> np.ndarray:
        return self.engine.sample(self.slots)

    def first(self) -> np.ndarray:
        return self.engine.first(self.slots)
