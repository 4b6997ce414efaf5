"""The ``torch.optim.Optimizer`` contract that every memopt optimizer keeps, whatever its update rule.

* Parameter groups are completed and validated when they are added (at construction and by
  ``add_param_group``), and a rejected group is not kept: errors come before any state exists.
* Messages name the parameter (``param_names`` from ``memopt.build_optimizer`` or torch's named
  parameters) or its position and shape.
* ``load_state_dict`` keeps every state tensor's dtype exactly as saved and checks the state against what
  the optimizer would create for that parameter.
* Parameters may be DTensors sharded on dim 0 (FSDP2); their state is then held as DTensors, and
  ``prepare_state`` creates all of it without stepping, as the template that
  ``torch.distributed.checkpoint`` loads into (:mod:`memopt.state.sharding`).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import torch
from torch.optim import Optimizer

from memopt.state import sharding


def param_name(group: dict, group_index: int, position: int, param: torch.Tensor) -> str:
    """A name for messages: the parameter's name when the group has ``param_names``, else its position."""
    names = group.get("param_names")
    if names is not None and position < len(names):
        return f"parameter {names[position]!r}"
    return f"param_groups[{group_index}]['params'][{position}] (shape {tuple(param.shape)})"


class MemoptBase(Optimizer):
    """Base of all memopt optimizers: validated groups, named errors, exact state loading.

    Subclasses override :meth:`_complete_group` (fill defaults), :meth:`_validate_group` (raise
    ``ValueError``) and :meth:`_check_loaded_state` (reject state of another configuration).
    """

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._complete_group(group)
            self._validate_group(group, len(self.param_groups) - 1)
        except Exception:
            self.param_groups.pop()
            raise

    def _complete_group(self, group: dict) -> None:
        """Fill in derived or defaulted hyperparameters of a newly added (or loaded) group."""

    def _validate_group(self, group: dict, group_index: int) -> None:
        """Raise ``ValueError`` naming the hyperparameter or parameter if ``group`` is invalid."""
        for position, param in enumerate(group["params"]):
            sharding.check_param(param, param_name(group, group_index, position, param))
            if param.is_complex():
                raise ValueError(
                    f"{param_name(group, group_index, position, param)} is complex; memopt optimizers handle real "
                    "parameters. Optimize torch.view_as_real(param) instead, or use a torch.optim optimizer for it."
                )

    def _check_loaded_state(self, param: torch.Tensor, state: dict, group: dict, name: str) -> None:
        """Raise ``ValueError`` if ``state`` could not have been created by this optimizer for ``param``."""

    def prepare_state(self) -> None:
        """Create every parameter's state (zero tensors, step counters at 0) without stepping, so that
        ``state_dict()`` lists every entry a checkpoint of this optimizer holds: the template that
        ``torch.distributed.checkpoint.load`` fills in place. Parameters that already have state keep it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement prepare_state()")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``, keeping every state tensor's dtype exactly as saved.

        ``torch.optim.Optimizer.load_state_dict`` casts floating state to the parameter's dtype (and would
        turn int64 projector indices or float32 accumulators of bfloat16 parameters into something else);
        here the groups are loaded by torch and the per-parameter state by memopt, moved to the
        parameter's device only, and checked against the group's estimators.
        """
        saved_state = state_dict["state"]
        super().load_state_dict({**state_dict, "state": {}})
        params_by_id: dict[Any, tuple[torch.Tensor, dict, str]] = {}
        for group_index, (saved_group, group) in enumerate(zip(state_dict["param_groups"], self.param_groups)):
            self._complete_group(group)
            for position, (pid, param) in enumerate(zip(saved_group["params"], group["params"])):
                params_by_id[pid] = (param, group, param_name(group, group_index, position, param))
        new_state: defaultdict[torch.Tensor, dict] = defaultdict(dict)
        for pid, saved in saved_state.items():
            if pid not in params_by_id:
                raise ValueError(
                    f"Cannot load optimizer state: state for parameter id {pid!r} has no parameter in "
                    "param_groups; the checkpoint does not belong to this optimizer."
                )
            param, group, name = params_by_id[pid]
            state = {k: v.to(device=param.device) if torch.is_tensor(v) else copy.deepcopy(v) for k, v in saved.items()}
            self._check_loaded_state(param, state, group, name)
            new_state[param] = state
        self.state = new_state
