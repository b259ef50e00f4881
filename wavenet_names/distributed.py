"""Data-parallel training on torch.distributed, started by the standard launcher:

    torchrun --standalone --nproc_per_node=N -m wavenet_names train ...

Each rank trains on a disjoint share of every global batch. Two things make N ranks train the model
that one process would train on the whole batch: the loss of each share is weighted by its share of
the batch's positions (DistributedDataParallel averages gradients over ranks), and BatchNorm's
statistics are reduced over all ranks (see layers.BatchNorm and layers.sync_batchnorm).
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> Context:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE, RANK, ...);
    a plain single process gets Context(). NCCL on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context()
    context = Context(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return context


def cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on one: ranks must agree on when to stop."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


class _AllReduceSum(torch.autograd.Function):
    """A sum over ranks that gradients flow through: the gradient of each rank's input is the sum of
    every rank's output gradient (the forward's own transpose)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)
