"""Distributed helpers: the one place that reads torchrun's environment.

Rank and world size are returned in a :class:`DistInfo` and passed explicitly to whatever needs them; no
module reads global distributed state on its own. gloo on the CPU, NCCL on GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as torch_dist
from torch import Tensor


@dataclass
class DistInfo:
    """This process's place in the job."""

    rank: int = 0  # global rank
    world_size: int = 1  # number of processes
    local_rank: int = 0  # rank on this machine (GPU index)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun job described by the environment, or describe a single process.

    device: "cpu", "cuda" or None (CUDA when available). Under torchrun each rank uses ``cuda:LOCAL_RANK``.
    """
    want_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def is_initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` ``[B, ...]`` over ranks (rank order) with gradients flowing back to each rank.

    Every rank must pass the same shape (truncate to the smallest batch first). Single process: ``x``.
    """
    if not is_initialized() or torch_dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def all_gather_sizes(n: int, device: torch.device) -> list[int]:
    """The integer ``n`` of every rank."""
    if not is_initialized():
        return [n]
    t = torch.tensor([n], device=device)
    out = [torch.zeros_like(t) for _ in range(torch_dist.get_world_size())]
    torch_dist.all_gather(out, t)
    return [int(v.item()) for v in out]


def all_reduce_mean(value: float, device: torch.device) -> float:
    """The mean of a float over ranks (for logging)."""
    if not is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch_dist.all_reduce(t)
    return float(t.item()) / torch_dist.get_world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (one all-reduce; ``flag`` alone without DDP)."""
    if not is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if is_initialized():
        torch_dist.barrier()


def cleanup() -> None:
    if is_initialized():
        torch_dist.destroy_process_group()
