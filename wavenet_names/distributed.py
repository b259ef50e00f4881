"""Data-parallel training on torch.distributed, started by the standard launcher:

    torchrun --standalone --nproc_per_node=N -m wavenet_names train ...

Each rank trains on a disjoint share of every global batch. Two things make N ranks train the model
that one process would train on the whole batch: the loss of each share is weighted by its share of
the batch's positions (DistributedDataParallel averages gradients over ranks), and BatchNorm's
statistics are reduced over all ranks (see layers.BatchNorm and layers.sync_batchnorm).
"""

import gc
import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # torchrun's name for this job (TORCHELASTIC_RUN_ID: --rdzv-id, or a fresh one per --standalone launch),
    # the same in every worker group it restarts; None outside torchrun, or when torchrun was given none
    run_id: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


_joined = False  # whether setup() joined torchrun's process group in this process (main then ends it: leave)


def joined() -> bool:
    """Whether this process trained as a rank of several: a torchrun worker, to end with `leave`."""
    return _joined


def launched_ranks() -> int:
    """How many ranks the launcher started (WORLD_SIZE): 1 for a plain process."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str) -> Context:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE, RANK, ...);
    a plain single process gets Context(). NCCL on CUDA, gloo on CPU."""
    world_size = launched_ranks()
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    run_id = None if run_id in (None, "", "none") else run_id  # "none": torchrun's default without --rdzv-id
    if world_size == 1:
        return Context(run_id=run_id)
    context = Context(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")), run_id)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
    if not dist.is_initialized():
        # torchrun's store outlives the worker groups it restarts, and with it what the groups before
        # wrote there: a restarted gloo group would read a dead peer's address and fail to connect
        # (seen with torch 2.13, torchrun --standalone). So each attempt keeps its keys apart.
        store, _, _ = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(
            "nccl" if use_cuda else "gloo",
            store=dist.PrefixStore(f"attempt_{attempt}/", store),
            rank=context.rank,
            world_size=world_size,
        )
        global _joined
        _joined = True
    return context


def cleanup() -> None:
    """Leave the process group, every rank at once, once nothing holds it (Trainer.undistribute): its
    gloo threads end here, in a whole interpreter, not in its teardown (which `leave` skips too)."""
    if dist.is_initialized():
        dist.barrier()
        gc.collect()  # what still refers to the group in a cycle goes first
        dist.destroy_process_group()


def leave(status: int) -> NoReturn:
    """End a torchrun worker whose command has returned (its run saved, its group left: cleanup) with
    `status`, its output flushed, and without the interpreter's teardown: there the C++ threads of
    PyTorch and its collectives end in no fixed order with what they use, and a worker of a finished
    run aborted now and then ("terminate called without an active exception", SIGABRT), which torchrun
    reports as the whole job failed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (a closed pipe): nothing more to say
            pass
    logging.shutdown()
    os._exit(status)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on one: ranks must agree on when to stop."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def most_over_ranks(value: float, device: torch.device) -> float:
    """The largest of every rank's `value`, on every rank: the ranks' one clock is the slowest rank's."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def gathered(value) -> list:
    """Every rank's `value` (any picklable object), in rank order, on every rank: [value] in one process."""
    if not dist.is_initialized():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


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
