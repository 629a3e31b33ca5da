"""Choosing the device: ``--gpu -1`` is the CPU, ``--gpu N`` the N-th CUDA device (or MPS)."""

from __future__ import annotations

import torch

from .config import BACKENDS
from .errors import InvalidInput, opt


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def select_device(gpu: int | None = None, backend: str = "cuda") -> torch.device:
    """The device for ``--gpu``/``--gpu-backend``; None picks GPU 0 when one exists, else the CPU."""
    if backend not in BACKENDS:
        raise InvalidInput("gpu_backend", f"must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if gpu is None:
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if gpu < 0:
        return torch.device("cpu")
    if backend == "mps":
        if gpu != 0 or not _mps_available():
            raise InvalidInput("gpu", f"{gpu} {opt('gpu_backend')} mps: no such Apple GPU here "
                                      f"(use {opt('gpu')} -1 for the CPU)")
        return torch.device("mps")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpu == 0 and not count and _mps_available():  # a Mac: its one GPU is GPU 0
        return torch.device("mps")
    if gpu >= count:
        have = f"only {count} CUDA device(s)" if count else "no CUDA device"
        raise InvalidInput("gpu", f"{gpu}: this machine has {have} (use {opt('gpu')} -1 for the CPU)")
    return torch.device("cuda", gpu)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {device.index} ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({torch.get_num_threads()} threads)"
