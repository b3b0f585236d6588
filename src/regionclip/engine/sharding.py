"""Sharded inference under ``torchrun``: each rank takes every ``world_size``-th item, rank 0 gathers.

``regionclip eval`` and ``regionclip detect`` run unchanged as one process, or as ``torchrun --nproc_per_node N
-m regionclip eval ...`` (same arguments): :func:`inference_job` joins the job, :func:`shard_indices` gives a
rank its items (strided, so the shards differ by at most one item and keep the input order inside each),
and :func:`gather_lists` brings every rank's results to all ranks in rank order for rank 0 to merge and
write. Results are Python objects (CPU tensors, dicts), sent with ``all_gather_object`` (gloo or NCCL).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist

from regionclip.engine.distributed import DistInfo, init_distributed, is_initialized


def inference_job(device: str | None) -> DistInfo:
    """This process's place in a torchrun job (``WORLD_SIZE`` > 1: joins it, device ``cuda:LOCAL_RANK`` for a
    CUDA ``device``), or a single process on ``device`` exactly as given (None: CUDA when available)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return init_distributed(device)
    return DistInfo(device=torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))


def shard_indices(n: int, dist: DistInfo) -> list[int]:
    """The indices of ``n`` items that rank ``dist.rank`` processes: ``rank, rank + W, rank + 2W, ...``."""
    return list(range(dist.rank, n, dist.world_size))


def gather_lists(items: list, dist: DistInfo) -> list:
    """Every rank's ``items`` concatenated in rank order, on every rank (``items`` itself in one process)."""
    if not dist.distributed or not is_initialized():
        return list(items)
    parts: list = [None] * dist.world_size
    torch_dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]
