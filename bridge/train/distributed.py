"""Training on several processes with torchrun, and on one without it, through the same code.

    ctx = distributed.setup("cpu")      # reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK
    net = ctx.wrap(net)                 # DistributedDataParallel when world > 1, else itself
    for idx in ctx.shard(order):        # this rank's share of one epoch's (shared) order
        ...
    value = ctx.mean(loss.item())       # the loss averaged over every rank, for logs
    if ctx.is_main: write files         # only rank 0 writes checkpoints, samples, bundles
    ctx.close()

Every rank draws the epoch order from the same seed, so the shards never overlap and a run is
repeatable. CPU processes use gloo; CUDA ones use NCCL with one GPU per local rank.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bridge.errors import ConfigError


@dataclass
class TrainContext:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def shard(self, items: list) -> list:
        """This rank's items, equal in number on every rank (DDP needs the same step count):
        the list is cut to a multiple of the world size first."""
        if not self.distributed:
            return list(items)
        usable = len(items) - len(items) % self.world
        return list(items[self.rank:usable:self.world])

    def mean(self, value: float) -> float:
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        if self.device.type == "cuda":
            t = t.to(self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (early stopping must agree)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0])
        if self.device.type == "cuda":
            t = t.to(self.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (for saving and sampling)."""
    return getattr(module, "module", module)


def setup(device: str = "cpu") -> TrainContext:
    """One process: TrainContext on `device`. Under torchrun: join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot train on device '{device}': {e}") from None
    if world <= 1:
        try:
            torch.empty(1, device=dev)
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"cannot train on device '{device}': {e}") from None
        return TrainContext(device=dev)
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return TrainContext(rank=rank, world=world, device=dev)
