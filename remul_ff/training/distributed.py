"""Data-parallel training on torch.distributed, launched by torchrun or SLURM's srun.

``torchrun --nproc_per_node=N -m remul_ff train config.yaml`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; under SLURM, ``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID`` are used
when those are absent (``MASTER_ADDR``/``MASTER_PORT`` must then be exported by the job script).
NCCL is used on CUDA and gloo on CPU. Collectives time out instead of hanging when a rank dies.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from remul_ff.errors import ConfigError

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass
class DistributedContext:
    """Where this process sits in a data-parallel job (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files, logs and progress bars."""
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor, average: bool = False) -> torch.Tensor:
        """Sum (or average) ``tensor`` over all ranks, in place; a no-op in a single process."""
        if self.enabled:
            dist.all_reduce(tensor)
            if average:
                tensor /= self.world_size
        return tensor

    def barrier(self) -> None:
        """Wait for every rank; a no-op in a single process."""
        if self.enabled:
            dist.barrier()


def _env_int(*names: str) -> int | None:
    for name in names:
        if name in os.environ:
            return int(os.environ[name])
    return None


def detect() -> DistributedContext:
    """Rank, world size and local rank from torchrun's or SLURM's environment variables."""
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS")
    if not world or world == 1:
        return DistributedContext()
    return DistributedContext(
        rank=_env_int("RANK", "SLURM_PROCID") or 0, world_size=world, local_rank=_env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
    )


def initialise(device: torch.device) -> tuple[DistributedContext, torch.device]:
    """Start the process group when launched distributed; returns the context and this rank's device."""
    ctx = detect()
    if not ctx.enabled:
        return ctx, device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        os.environ.setdefault("RANK", str(ctx.rank))
        os.environ.setdefault("WORLD_SIZE", str(ctx.world_size))
        if "MASTER_ADDR" not in os.environ:
            raise ConfigError("a distributed run needs MASTER_ADDR and MASTER_PORT; launch with torchrun or export them under SLURM.")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT, rank=ctx.rank, world_size=ctx.world_size)
    return ctx, device


def check_global_batch(batch_size: int, ctx: DistributedContext) -> None:
    """``train.batch_size`` is the global batch: every process takes the same share of it."""
    if batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size ({batch_size}) is the global batch and must be divisible by the {ctx.world_size} processes.")


def shutdown() -> None:
    """Destroy the process group, if any."""
    if dist.is_initialized():
        dist.destroy_process_group()
