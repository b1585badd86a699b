"""Which process does what in a :func:`~vision_lens.streaming.collect` pass under torch.distributed.

With ``torch.distributed`` initialised (``torchrun`` sets it up; call
``torch.distributed.init_process_group()`` before ``collect``), shard ``j`` (a contiguous block of
whole global batches) belongs to rank ``j % world_size``. Batches are the same whatever the world
size, so per-image products are bit-identical to a single-process run, and so are the statistics,
which are summed shard by shard in shard order. Without torch.distributed the process is rank 0 of
1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["barrier", "is_distributed", "owned_shards", "rank", "world_size"]


def is_distributed() -> bool:
    """Whether a torch.distributed process group is running (``torchrun``)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without torch.distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes share the pass (1 without torch.distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    """Wait for every rank (nothing without torch.distributed)."""
    if is_distributed():
        if dist.get_backend() == "nccl" and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def owned_shards(n_shards: int, rank: int, world_size: int) -> list[int]:
    """The shards rank ``rank`` of ``world_size`` writes: ``rank, rank + world_size, ...``.

    Example:
        >>> owned_shards(5, 1, 2)
        [1, 3]
    """
    return list(range(rank, n_shards, world_size))
