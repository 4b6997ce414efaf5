"""Exact accounting of the memory an optimizer's state holds.

What is counted, for every entry of ``optimizer.state``: each tensor's ``numel * element_size`` (a storage
shared by several state entries is counted once), 8 bytes for a Python int or float (a ``step``
counter), 1 for a bool and the UTF-8 length of a string (a projector's layout); an 8-bit
:class:`~memopt.state.formats.QuantizedState` as what a checkpoint holds of it (codes, block maxima and the
format tag string). A tensor subclass that
wraps other tensors (a DTensor, torchao's 8-bit states) counts the tensors it wraps: for a DTensor, this
rank's shard; :func:`state_bytes_per_rank` gathers the count of every rank of a distributed run.
Tensors without memory (meta, or the memory planner's fake tensors) are counted by shape and dtype, a
storage shared by several entries once. Parameters, gradients and temporaries of the step are not
optimizer state and are not counted here (see the memory planner, :mod:`memopt.harness.memory.profile`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer

from memopt.state import sharding
from memopt.state.formats import QuantizedState
from memopt.state.template import StateSlot, is_sharded, slot_format


def _value_bytes(value: Any, seen: set[tuple]) -> int:
    if isinstance(value, QuantizedState):  # one 8-bit state: codes, maxima and the format tag, as a checkpoint
        return _value_bytes(value.format.flatten("", value), seen)
    if isinstance(value, DTensor):  # this rank's shard (its flatten protocol also lists the device mesh)
        return _value_bytes(value.to_local(), seen)
    if torch.is_tensor(value) and type(value) is not torch.Tensor and hasattr(value, "__tensor_flatten__"):
        # a wrapper subclass (DTensor, torchao's quantized states): count the tensors it holds, e.g. the
        # local shard of a DTensor or the codes and scales of an 8-bit state
        inner_names, _ = value.__tensor_flatten__()
        return sum(_value_bytes(getattr(value, name), seen) for name in inner_names)
    if torch.is_tensor(value):
        storage = value.untyped_storage()
        if storage.device.type == "meta":  # meta or fake tensor: no address; the storage object names it
            key = (id(storage), value.storage_offset(), "meta")
        else:
            key = (storage.data_ptr(), value.storage_offset())
        if key in seen:
            return 0
        seen.add(key)
        return value.numel() * value.element_size()
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 8
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, dict):
        return sum(_value_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_value_bytes(v, seen) for v in value)
    if value is None:
        return 0
    raise TypeError(f"state_bytes cannot count a state value of type {type(value).__name__}.")


def state_bytes(optimizer: Optimizer) -> int:
    """The exact number of bytes held by ``optimizer``'s state (see the module docstring)."""
    seen: set[tuple] = set()
    return sum(_value_bytes(state, seen) for state in optimizer.state.values())


def slot_bytes(slot: StateSlot, param: torch.Tensor, group: dict) -> int:
    """Bytes the slot holds for ``param`` in ``group`` once created (this rank's part of a sharded one), counted
    as :func:`state_bytes` counts it, from its format's ``nbytes``: nothing is allocated."""
    if slot.kind == "raw":
        return _value_bytes(slot.init, set())
    fmt = slot_format(slot, param, group)
    return fmt.nbytes(tuple(slot.shape), sharding.spec_of(param), is_sharded(slot, param))


def template_bytes(optimizer: Optimizer) -> int:
    """What :func:`state_bytes` will count once every parameter of ``optimizer`` (a memopt optimizer) has its
    state: the slots of ``state_template`` of each parameter, and of ``group_state_template`` of each group's
    first one, from the formats' ``nbytes``, before any state exists and without allocating. After a step
    of every parameter the two are equal (a test holds every registry optimizer and storage option to it)."""
    total = 0
    for group in optimizer.param_groups:
        for position, param in enumerate(group["params"]):
            template = dict(optimizer.state_template(param, group))
            if position == 0:
                template.update(optimizer.group_state_template(param, group))
            total += sum(slot_bytes(slot, param, group) for slot in template.values())
    return total


def state_bytes_per_rank(optimizer: Optimizer, group: dist.ProcessGroup | None = None) -> list[int]:
    """:func:`state_bytes` of every rank of ``group`` (default: all), in rank order (a collective: every
    rank calls it). Their sum is what the state occupies over all processes, replicated states (a
    projector basis, block maxima) counted on every rank that holds them. One process: ``[state_bytes]``."""
    own = state_bytes(optimizer)
    if not dist.is_initialized():
        return [own]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else None
    mine = torch.tensor([own], dtype=torch.int64, device=device)
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, mine, group=group)
    return [int(t.item()) for t in every]
