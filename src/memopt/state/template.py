"""The declarative state template: what an optimizer keeps per parameter, as data.

An optimizer built on :class:`memopt.optim.base.MemoptBase` describes its per-parameter state as a dict
``key -> StateSlot`` (:meth:`~memopt.optim.base.MemoptBase.state_template`; the engine assembles it from
its estimators' :meth:`~memopt.estimators.base.Estimator.state_template`). The same template drives

* state creation at a parameter's first step (:func:`create_state`);
* ``prepare_state()``: the whole state without stepping, also on the meta device (a memory plan, or the
  template ``torch.distributed.checkpoint`` loads into);
* the check of a loaded checkpoint (keys, shapes, layouts against a meta-device copy);
* ``memopt.state_bytes`` (which counts what the template created), and
  :func:`memopt.state.accounting.template_bytes`, the same number from the formats' ``nbytes`` before any
  state exists.

Kinds of slot:

* ``"elementwise"``: a tensor the update reads and writes elementwise (momentum, an iterate copy); stored
  in the format the group's ``state_storage`` chooses (:mod:`memopt.state.formats`: the optimizer's default
  dtype, float32, bfloat16 with optional stochastic rounding, block-wise 8-bit);
* ``"reduced"``: an accumulator over many entries (row/column statistics, a norm): always the reduced
  dtype (float32 for 16-bit parameters), since a bfloat16 or 8-bit sum stops growing once it is large;
* ``"fixed"``: a tensor of a fixed dtype that no storage option changes (Subspace-Momentum's projector:
  its basis in the parameter's dtype, or its int64 indices); the update may replace it whole;
* ``"raw"``: a Python value (``step``, a scalar coefficient such as NAG-GS's ``gamma``, a projector's layout,
  the extreme-tensoring index).

State shared by a whole parameter group (AdaGrad-Norm's ``global_norm_sq``) is declared by
``group_state_template`` with the same slots and kept in the state of the group's first parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from memopt.state import sharding, storage
from memopt.state.formats import Plain, StateFormat

#: ``init`` of an elementwise slot that starts as a copy of the parameter (NAG-GS's ``v``)
PARAM = "param"


@dataclass(frozen=True)
class StateSlot:
    """One entry of a state template.

    Attributes:
        kind: ``"elementwise"``, ``"reduced"``, ``"fixed"`` or ``"raw"`` (module docstring).
        shape: the global tensor shape (ignored for ``"raw"``).
        init: the initial value: a number, :data:`PARAM` (a copy of the parameter), or for ``"raw"`` any value.
        non_negative: the state never goes below 0 (8-bit storage then uses the unsigned map).
        sharded: whether dim 0 runs over the parameter's rows on FSDP2 shards (default: when ``shape`` is
            the parameter's).
        default: the dtype of an elementwise slot under ``state_storage="default"``: ``"compute"`` (float32
            for 16-bit parameters) or ``"param"`` (the parameter's, as ``torch.optim`` keeps it).
        dtype: the dtype of a ``"fixed"`` slot: a ``torch.dtype``, or ``"param"`` for the parameter's.
    """

    kind: Literal["elementwise", "reduced", "fixed", "raw"]
    shape: tuple[int, ...] = ()
    init: Any = 0.0
    non_negative: bool = False
    sharded: bool | None = None
    default: Literal["compute", "param"] = "compute"
    dtype: torch.dtype | Literal["param"] | None = None


def raw(value: Any) -> StateSlot:
    """A slot holding a Python value (``step``, a coefficient)."""
    return StateSlot("raw", init=value)


def like_param(param: torch.Tensor, **options: Any) -> StateSlot:
    """An elementwise slot of the parameter's shape kept in its dtype under ``state_storage="default"``, as
    ``torch.optim`` keeps momentum and second moments (``options``: ``init``, ``non_negative``)."""
    return StateSlot("elementwise", tuple(param.shape), default="param", **options)


def is_sharded(slot: StateSlot, param: torch.Tensor) -> bool:
    """Whether the slot's dim 0 is cut like ``param``'s rows (its own setting, else: it has ``param``'s shape)."""
    return tuple(slot.shape) == tuple(param.shape) if slot.sharded is None else slot.sharded


def slot_format(slot: StateSlot, param: torch.Tensor, group: dict) -> StateFormat:
    """The format a tensor slot is created in for ``param`` in ``group``."""
    if slot.kind == "elementwise":
        default = storage.compute_dtype(param) if slot.default == "compute" else param.dtype
        return storage.choose_format(group, tuple(slot.shape), non_negative=slot.non_negative, default=default)
    if slot.kind == "reduced":
        return Plain(storage.reduced_dtype(param))
    if slot.kind == "fixed":
        return Plain(param.dtype if slot.dtype in (None, "param") else slot.dtype)
    raise ValueError(f"a {slot.kind!r} slot holds no tensor")


def create_state(param: torch.Tensor, group: dict, template: dict[str, StateSlot]) -> dict[str, Any]:
    """The state of ``param`` before its first step, as ``template`` declares it (DTensors laid out like
    ``param`` if it is one; one entry per slot, e.g. a :class:`~memopt.state.formats.QuantizedState`)."""
    state: dict[str, Any] = {}
    for key, slot in template.items():
        if slot.kind == "raw":
            state[key] = slot.init
            continue
        fill = sharding.local(param).detach() if slot.init == PARAM else slot.init
        fmt = slot_format(slot, param, group)
        state[key] = fmt.create(param, tuple(slot.shape), sharded=is_sharded(slot, param), fill=fill)
    return state
