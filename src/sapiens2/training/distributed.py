"""Process groups and model wrapping: single process, DDP, or FSDP2 (``fully_shard``), launched by torchrun.

``torchrun --nproc-per-node N -m sapiens2 train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; multi-node
runs use torchrun's rendezvous (``--nnodes``, ``--rdzv-backend c10d``, ``--rdzv-endpoint host:port``). The backend
is NCCL on CUDA and gloo otherwise (so everything here also runs, and is tested, on CPU).

State dicts always travel as *full*, unsharded, official-key dicts (``backbone.*``, ``decode_head.*``) through
``torch.distributed.checkpoint.state_dict``, so a checkpoint written by any of the three modes loads in any other.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from ..errors import TrainingConfigError
from ..runtime import resolve_device

logger = logging.getLogger(__name__)

__all__ = ["DistInfo", "setup_distributed", "cleanup_distributed", "pick_device", "wrap_model", "unwrap_model",
           "full_model_state_dict", "load_full_model_state_dict", "full_optimizer_state_dict",
           "load_full_optimizer_state_dict", "all_reduce_mean", "barrier", "broadcast_object"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str | None, local_rank: int = 0) -> torch.device:
    """This process's device (see :func:`sapiens2.runtime.resolve_device`; CUDA takes the LOCAL_RANK-th GPU)."""
    return resolve_device(requested, local_rank=local_rank)


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        logger.info("joined %s process group: rank %d of %d on %s", backend, rank, world, dev)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local_rank, dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, mode: str, info: DistInfo, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Wrap for data parallel training. ``mode``: ``ddp`` or ``fsdp`` (each backbone block and the root are
    sharded with ``fully_shard``; ``param_dtype`` sets FSDP2's mixed-precision compute dtype, gradients are
    reduced in float32). Single process: returned as is."""
    if not info.enabled:
        return model
    if mode == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mesh = init_device_mesh(info.device.type, (info.world_size,))
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else \
            MixedPrecisionPolicy()
        for block in model.backbone.blocks:
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model
    raise TrainingConfigError(f"distributed mode must be ddp or fsdp, got {mode!r}")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The task model under a DDP wrapper (FSDP2 shards in place: same object)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU state dict with the official keys. Collective under FSDP: call it on every rank."""
    return get_model_state_dict(unwrap_model(model), options=_FULL)


def load_full_model_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (strict) into a plain, DDP or FSDP2 model; every rank passes the full dict."""
    set_model_state_dict(unwrap_model(model), state, options=StateDictOptions(full_state_dict=True, strict=True))


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Optimizer state keyed by parameter names, unsharded (collective under FSDP)."""
    return get_optimizer_state_dict(unwrap_model(model), optimizer, options=_FULL)


def load_full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    set_optimizer_state_dict(unwrap_model(model), optimizer, state, options=StateDictOptions(full_state_dict=True))


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a copy); the value itself when not distributed."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
