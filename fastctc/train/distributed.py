"""Multi-process training with torchrun + DistributedDataParallel.

`torchrun --nproc_per_node N -m fastctc train CONFIG` sets RANK / WORLD_SIZE / LOCAL_RANK; each process
then joins one process group (NCCL on GPUs, gloo on CPU), trains on its share of every global batch,
and rank 0 alone logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # a gloo group over the same ranks, for flags the hosts agree on (the stop request) without a
    # device collective; under gloo it is the default group
    host_group: object = field(default=None, compare=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group torchrun describes; a plain `fastctc train` is world size 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    host_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    return DistInfo(info.rank, info.world_size, info.local_rank, host_group)


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when `flag` is true on any. A host-side all-reduce on the gloo group: it waits
    for the other hosts, never for the device, so the host keeps running ahead of its GPU."""
    if not info.enabled:
        return flag
    votes = torch.tensor([int(flag)], dtype=torch.int32, device="cpu")
    dist.all_reduce(votes, op=dist.ReduceOp.SUM, group=info.host_group)
    return bool(votes[0] > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group once every rank is done (rank 0 may still be writing files)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
