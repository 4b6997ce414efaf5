"""What the accelerated and variance-reduced optimizers share on top of :class:`MemoptBase`.

Each optimizer declares the state it keeps for a parameter as a template
(:meth:`~memopt.optim.base.MemoptBase.state_template`, :mod:`memopt.optim.template`), from which the state
is created at the first step or by ``prepare_state`` and against which a loaded checkpoint is checked key
by key and shape by shape; it steps through the per-parameter contract of :class:`MemoptBase`
(``_params_with_grad``, ``_begin``, ``ps.load`` / ``ps.store``, ``ps.write_back``), so its elementwise
states take every storage format (``state_storage``: the compute dtype by default, ``"float32"``,
``"bfloat16"`` with optional ``stochastic_rounding``, ``"8bit"``, ``"4bit"``).

Sharded parameters (FSDP2 DTensors): the updates are elementwise, so each rank updates its local piece of
the parameter and of its state (DTensors cut like the parameter); the few global scalars (norms, inner
products) are all-reduced over the shard group (:mod:`memopt.state.sharding`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from memopt.optim.base import STORAGE_OPTIONS, MemoptBase


def storage_options(state_storage: str, quant_block_size: int, stochastic_rounding: bool) -> dict[str, Any]:
    """The storage group options, for an optimizer's ``defaults``."""
    return dict(state_storage=state_storage, quant_block_size=quant_block_size, stochastic_rounding=stochastic_rounding)


#: the storage options' defaults, for signatures
DEFAULT_STORAGE = STORAGE_OPTIONS["state_storage"]
DEFAULT_BLOCK = STORAGE_OPTIONS["quant_block_size"]


class AcceleratedBase(MemoptBase):
    """Base class of :mod:`memopt.accelerated` optimizers.

    Subclasses define ``_check_hyperparameters(group)`` (raise ``ValueError``), ``state_template(param,
    group)`` and ``step``. Optimizers whose ``step`` must re-evaluate the model set ``needs_closure = True``;
    training loops check ``getattr(optimizer, "needs_closure", False)`` and then call
    ``optimizer.step(closure)``.
    """

    needs_closure: ClassVar[bool] = False

    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        self._check_hyperparameters(group)

    def _check_hyperparameters(self, group: dict) -> None:
        """Raise ``ValueError`` naming the hyperparameter, its value and the fix."""
