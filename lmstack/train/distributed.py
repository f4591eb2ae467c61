"""Data parallelism under `torchrun`: every process holds the model and trains on its share of
each global batch; gradients are averaged across processes (DDP), or weights and gradients are
sharded across GPUs (FSDP). Without torchrun everything here reduces to a single process.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn



@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: torch.device) -> World:
    """Join the process group torchrun set up (gloo on CPU, NCCL on GPU); one process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and object collectives use the current GPU
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def joined_world(device: str | None) -> Iterator[World]:
    """The process group for one run, kept open until the result is saved, then closed."""
    from lmstack.device import resolve_device

    world = init_world(resolve_device(device))
    try:
        yield world
    finally:
        if world.distributed and dist.is_initialized():
            dist.destroy_process_group()


def full_state_dict(model: nn.Module, world: World) -> dict[str, torch.Tensor]:
    """Every weight, unsharded, on the CPU (collective under FSDP: all processes must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=world.distributed)
    return get_model_state_dict(model, options=options)


def all_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of `value` over all processes (a copy; the input is left alone)."""
    value = value.detach().clone()
    if world.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def gather_objects(obj, world: World) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if not world.distributed:
        return [obj]
    gathered = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered


def wrap_model(model: nn.Module, world: World, kind: str, device: torch.device) -> nn.Module:
    """DDP or FSDP (weights sharded over processes; NCCL on GPUs, gloo on CPUs) around `model`;
    the model itself when not distributed."""
    if not world.distributed:
        return model
    if kind == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:  # one shard group per block, then the rest
            fully_shard(layer)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
