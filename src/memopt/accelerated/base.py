"""What the accelerated and variance-reduced optimizers share on top of :class:`MemoptBase`.

Each optimizer declares the state it keeps for a parameter (:meth:`AcceleratedBase._state_template`), so
that a loaded checkpoint is checked key by key and shape by shape against what this optimizer would
create, builds it in one place (:meth:`AcceleratedBase._initial_state`, also used by ``prepare_state``),
and gets the list of parameters with gradients (dense ones only, named in errors).

Sharded parameters (FSDP2 DTensors): the updates are elementwise, so each rank updates its local piece of
the parameter and of its state (DTensors cut like the parameter); the few global scalars (norms, inner
products) are all-reduced over the shard group (:mod:`memopt.state.sharding`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from memopt.optim.base import MemoptBase, param_name
from memopt.state import sharding

#: a state entry that is a Python number (or a 0-d tensor) rather than a tensor shaped like something
SCALAR = "scalar"


class AcceleratedBase(MemoptBase):
    """Base class of :mod:`memopt.accelerated` optimizers.

    Subclasses define ``_check_hyperparameters(group)`` (raise ``ValueError``), ``_state_template(param,
    group)`` (state key -> expected shape, or :data:`SCALAR`) and ``step``. Optimizers whose ``step``
    must re-evaluate the model set ``needs_closure = True``; training loops check
    ``getattr(optimizer, "needs_closure", False)`` and then call ``optimizer.step(closure)``.
    """

    needs_closure: ClassVar[bool] = False

    # ----------------------------------------------------------------------------------- validation
    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        self._check_hyperparameters(group)

    def _check_hyperparameters(self, group: dict) -> None:
        """Raise ``ValueError`` naming the hyperparameter, its value and the fix."""

    # ------------------------------------------------------------------------------------ the state
    def _state_template(self, param: torch.Tensor, group: dict) -> dict[str, Any]:
        """State key -> expected tensor shape (a tuple) or :data:`SCALAR`, for ``param`` in ``group``."""
        raise NotImplementedError

    def _initial_state(self, param: torch.Tensor, group: dict) -> dict[str, Any]:
        """The state of ``param`` before its first step (DTensors laid out like ``param`` if it is one)."""
        raise NotImplementedError

    def prepare_state(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if not self.state[param]:
                    self.state[param].update(self._initial_state(param, group))

    def _check_loaded_state(self, param: torch.Tensor, state: dict, group: dict, name: str) -> None:
        template = self._state_template(param, group)
        hint = (
            f" The checkpoint was saved from a different model or {type(self).__name__} configuration; "
            "load it into the configuration it was saved from."
        )
        unknown = sorted(set(state) - set(template))
        if unknown:
            raise ValueError(f"Cannot load optimizer state for {name}: unexpected state keys {unknown}.{hint}")
        missing = sorted(set(template) - set(state))
        if missing:
            raise ValueError(f"Cannot load optimizer state for {name}: missing state keys {missing}.{hint}")
        for key, shape in template.items():
            value = state[key]
            if shape == SCALAR:
                if torch.is_tensor(value) and value.ndim != 0:
                    raise ValueError(
                        f"Cannot load optimizer state for {name}: state {key!r} must be a scalar, got shape "
                        f"{tuple(value.shape)}.{hint}"
                    )
            elif not torch.is_tensor(value) or tuple(value.shape) != tuple(shape):
                got = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
                raise ValueError(
                    f"Cannot load optimizer state for {name}: state {key!r} has shape {got}, expected "
                    f"{tuple(shape)}.{hint}"
                )
        sharding.check_loaded_layout(self._initial_state(param.detach().to("meta"), group), state, name)

    # --------------------------------------------------------------------------------------- helpers
    def _params_with_grad(self, group: dict, group_index: int) -> list[torch.Tensor]:
        """The parameters of ``group`` that have a gradient; a sparse gradient is an error naming it."""
        params = []
        for position, param in enumerate(group["params"]):
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise ValueError(
                    f"{param_name(group, group_index, position, param)} has a sparse gradient; "
                    f"{type(self).__name__} needs dense gradients. Use nn.Embedding(sparse=False)."
                )
            params.append(param)
        return params

    def _all_params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]
