"""Sampling: the CPU engine (:mod:`.engine`, compiled by :mod:`.engine_numba`) and the samplers over it (:mod:`.sampler`).

``from charrnn.sampling import Sampler, sample`` loads what it needs on first use.
"""

from importlib import import_module

_API = {"Sampler": "sampler", "sample": "sampler", "sample_from_model": "sampler", "StopMatcher": "sampler",
        "sampling_params": "sampler", "Engine": "engine", "SamplingParams": "engine"}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
