"""torch.distributed in one place: rank and world size are read here once and passed down as a `DistInfo`.

Without torchrun (no WORLD_SIZE in the environment) everything is a no-op at world size 1, so the same code runs
on a laptop CPU, one GPU, or N GPUs (NCCL) / N CPU processes (gloo).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_minutes: int = 30) -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and start the process group (nccl on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def count_processes(device: str = "auto", nproc: int | None = None) -> int:
    """Processes (and inference devices) for a run: `nproc` if given, else every visible GPU, 1 on CPU."""
    if nproc is not None:
        return nproc
    if device == "cpu" or not torch.cuda.is_available():
        return 1
    return max(1, torch.cuda.device_count())


def devices(device: str = "auto", nproc: int = 1) -> list[torch.device]:
    """One device per process: the first `nproc` GPUs, or the CPU once."""
    if device == "cpu" or not torch.cuda.is_available():
        return [torch.device("cpu")]
    return [torch.device("cuda", i) for i in range(min(nproc, torch.cuda.device_count()))]


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Sum tensors across ranks in place, flattened into one buffer per dtype (one collective, not one per tensor)."""
    if not info.distributed or not tensors:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def all_gather_cat(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate a tensor's first axis across ranks (sizes may differ between ranks)."""
    if not info.distributed:
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(sizes),) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    out = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


def gather_objects(obj: Any, info: DistInfo) -> list[Any] | None:
    """Pickle-gather one object per rank onto rank 0 (list there, None elsewhere); [obj] at world size 1."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_module_(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (so all ranks start identical)."""
    if not info.distributed:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)
