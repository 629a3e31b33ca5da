"""Data-parallel training on PyTorch's own engine (torch.distributed + DistributedDataParallel).

Launched by ``torchrun`` (or ``charrnn train --nproc K``), which sets RANK/WORLD_SIZE. Each rank
trains on its own share of every batch's streams; DDP averages the gradients; only rank 0
prints and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, per_rank: int) -> slice:
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


def world_from_env() -> World:
    """The process group described by torchrun's environment (a world of one without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(world: World, device: torch.device) -> None:
    """Join the process group; on CUDA the rank's GPU becomes its current device first (NCCL and
    cuDNN read the current device, which would otherwise be GPU 0 for every rank)."""
    if world.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")


def barrier(world: World, device: torch.device | None = None) -> None:
    """Wait until every rank gets here (so that no rank tears the group down under another's feet)."""
    if world.distributed and dist.is_initialized():
        if device is not None and device.type == "cuda" and dist.get_backend() == "nccl":
            dist.barrier(device_ids=[device.index])
        else:
            dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sum_all(values: list[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_rows(state: tuple | None, world: World) -> tuple | None:
    """Concatenate every rank's hidden-state rows (dimension 1) into the full state."""
    if state is None or not world.distributed:
        return state
    out = []
    for t in state:
        parts = [torch.empty_like(t) for _ in range(world.size)]
        dist.all_gather(parts, t.contiguous())
        out.append(torch.cat(parts, dim=1))
    return tuple(out)
