"""Training on several processes under PyTorch's own launcher (``torchrun``): one process per CPU
socket or GPU, each drawing its own patches, gradients averaged across processes after every
backward pass (what DistributedDataParallel does; done here on the gradients themselves so that
models with their own ``training_step`` are covered too), validation, checkpoints and weights by
rank 0. gloo on the CPU, NCCL on CUDA. Without torchrun (no WORLD_SIZE in the environment, or 1)
nothing here does anything.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from app.core.device import select_device


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> tuple[Ranks, torch.device]:
    """(ranks, this process's device): joins the process group torchrun describes in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Ranks(), select_device(device)
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    wanted = select_device(device)
    backend = "nccl" if wanted.type == "cuda" else "gloo"
    dev = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Ranks(rank, world, local, backend), dev


def teardown(ranks: Ranks) -> None:
    if ranks.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def broadcast_parameters(module: torch.nn.Module, ranks: Ranks) -> None:
    """Every rank starts from rank 0's parameters and buffers."""
    if not ranks.active:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(module: torch.nn.Module, ranks: Ranks) -> None:
    """Each parameter's gradient becomes the mean over the ranks (one flat all-reduce)."""
    if not ranks.active:
        return
    import torch.distributed as dist

    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:  # a parameter this rank's batch did not reach: it still takes part
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= ranks.world_size
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """True on every rank when any rank says True (ranks stop together)."""
    if not ranks.active:
        return flag
    import torch.distributed as dist

    dev = torch.device("cuda", ranks.local_rank) if ranks.backend == "nccl" else torch.device("cpu")
    t = torch.tensor([1.0 if flag else 0.0], device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather(obj, ranks: Ranks) -> list:
    """Every rank's ``obj`` (picklable, produced by this program), in rank order."""
    if not ranks.active:
        return [obj]
    import torch.distributed as dist

    out = [None] * ranks.world_size
    dist.all_gather_object(out, obj)
    return out
