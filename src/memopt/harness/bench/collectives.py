"""Count the collectives a piece of code issues, and the bytes each rank puts into them.

``torch.distributed.tensor.debug.CommDebugMode`` counts collectives but not their sizes, so this small
dispatch mode (written here for that reason) records, for every ``c10d`` op (what ``torch.distributed``'s
functions dispatch) and every functional collective (what DTensor's redistributions dispatch), the bytes
of the tensors this rank passes in: the tensor of an all-reduce or broadcast, its own piece of an
all-gather. What the network then carries depends on the algorithm (a ring all-reduce moves about
``2 (W - 1) / W`` times the payload per rank, an all-gather ``(W - 1)`` times the piece).

    with CollectiveBytes() as comm:
        optimizer.step()
    comm.bytes, comm.counts   # {"allreduce_": 45056, ...}, {"allreduce_": 9, ...}
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: schema argument names that hold the tensors this rank sends into a collective
_INPUTS = ("tensors", "input_tensors", "input_tensor", "inputs", "input")
#: the functional collectives (the namespace also holds helpers such as wait_tensor)
_FUNCTIONAL = ("all_gather_into_tensor", "all_reduce", "reduce_scatter_tensor", "broadcast", "all_to_all_single")


def _bytes(value: Any) -> int:
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_bytes(v) for v in value)
    return 0


class CollectiveBytes(TorchDispatchMode):
    """While active, ``counts[op]`` and ``bytes[op]`` accumulate every collective issued (see module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.distributed.tensor import DTensor

        if any(t is DTensor for t in types):
            return NotImplemented  # let DTensor turn the op into plain ops and collectives first
        kwargs = kwargs or {}
        namespace = getattr(func, "namespace", "")
        name = func.__name__.split(".")[0]
        functional = namespace == "_c10d_functional" and name.startswith(_FUNCTIONAL)
        if namespace == "c10d" or functional:
            for argument, value in zip(func._schema.arguments, args):
                if argument.name in _INPUTS:
                    self.bytes[name] += _bytes(value)
            self.counts[name] += 1
        return func(*args, **kwargs)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    @property
    def total_count(self) -> int:
        return sum(self.counts.values())
