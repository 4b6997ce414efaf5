"""The declarative state template: what an optimizer keeps per parameter, as data.

An optimizer built on :class:`memopt.optim.base.MemoptBase` describes its per-parameter state as a dict
``key -> StateSlot`` (:meth:`~memopt.optim.base.MemoptBase.state_template`). The same template drives

* state creation at a parameter's first step (:func:`create_state`);
* ``prepare_state()``: the whole state without stepping, also on the meta device (a memory plan, or the
  template ``torch.distributed.checkpoint`` loads into);
* the check of a loaded checkpoint (keys, shapes, layouts against a meta-device copy);
* ``memopt.state_bytes`` (which counts what the template created).

Kinds of slot:

* ``"elementwise"``: a tensor the update reads and writes elementwise (momentum, an iterate copy); stored
  in the format the group's ``state_storage`` chooses (:mod:`memopt.state.formats`: the optimizer's default
  dtype, float32, bfloat16 with optional stochastic rounding, block-wise 8-bit);
* ``"reduced"``: an accumulator over many entries (row/column statistics, a norm): always the reduced
  dtype (float32 for 16-bit parameters), since a bfloat16 or 8-bit sum stops growing once it is large;
* ``"raw"``: a Python value (``step``, a scalar coefficient such as NAG-GS's ``gamma``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from memopt.state import sharding, storage

#: ``init`` of an elementwise slot that starts as a copy of the parameter (NAG-GS's ``v``)
PARAM = "param"


@dataclass(frozen=True)
class StateSlot:
    """One entry of a state template.

    Attributes:
        kind: ``"elementwise"``, ``"reduced"`` or ``"raw"`` (module docstring).
        shape: the global tensor shape (ignored for ``"raw"``).
        init: the initial value: a number, :data:`PARAM` (a copy of the parameter), or for ``"raw"`` any value.
        non_negative: the state never goes below 0 (8-bit storage then uses the unsigned map).
        sharded: whether dim 0 runs over the parameter's rows on FSDP2 shards (default: when ``shape`` is
            the parameter's).
        default: the dtype under ``state_storage="default"``: ``"compute"`` (float32 for 16-bit
            parameters) or ``"param"`` (the parameter's, as ``torch.optim`` keeps it).
    """

    kind: Literal["elementwise", "reduced", "raw"]
    shape: tuple[int, ...] = ()
    init: Any = 0.0
    non_negative: bool = False
    sharded: bool | None = None
    default: Literal["compute", "param"] = "compute"


def raw(value: Any) -> StateSlot:
    """A slot holding a Python value (``step``, a coefficient)."""
    return StateSlot("raw", init=value)


def create_state(param: torch.Tensor, group: dict, template: dict[str, StateSlot]) -> dict[str, Any]:
    """The state of ``param`` before its first step, as ``template`` declares it (DTensors laid out like
    ``param`` if it is one)."""
    state: dict[str, Any] = {}
    for key, slot in template.items():
        if slot.kind == "raw":
            state[key] = slot.init
            continue
        sharded = tuple(slot.shape) == tuple(param.shape) if slot.sharded is None else slot.sharded
        if slot.kind == "reduced":
            dtype = storage.reduced_dtype(param)
            state[key] = sharding.zeros(param, slot.shape, dtype, sharded=sharded, fill=slot.init)
            continue
        fill = sharding.local(param).detach() if slot.init == PARAM else slot.init
        default = storage.compute_dtype(param) if slot.default == "compute" else param.dtype
        storage.create(
            state, key, param, group, slot.shape, non_negative=slot.non_negative, fill=fill, sharded=sharded,
            default=default,
        )  # fmt: skip
    return state
