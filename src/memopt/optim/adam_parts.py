"""Pieces of Adam that the GaLore, APOLLO and Muon optimizers share: the moments' template, the HF-style
AdamW step (``transformers``' and the GaLore / APOLLO packages': ``eps`` added to the uncorrected
``sqrt(v)``, the bias corrections folded into the step size, decoupled decay after the update), and the checks
of a group whose matrices are projected."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from memopt.estimators import projectors
from memopt.estimators.base import ParamStep
from memopt.optim.base import MemoptBase, param_name
from memopt.state.template import StateSlot, like_param, raw
from memopt.validation import check_betas, check_bool, check_choice, check_non_negative, check_positive_int

#: when a projector is rebuilt: memopt's Subspace-Momentum schedule or the GaLore / APOLLO packages'
PROJ_SCHEDULES = ("memopt", "galore")


def adam_template(param: torch.Tensor) -> dict[str, StateSlot]:
    """``step`` and Adam's two moments of ``param``'s shape (elementwise, in its dtype by default)."""
    return {"step": raw(0), "exp_avg": like_param(param), "exp_avg_sq": like_param(param, non_negative=True)}


def hf_adam_direction(ps: ParamStep, group: dict, grad: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Update the moments ``exp_avg`` and ``exp_avg_sq`` of ``ps`` with ``grad`` (the gradient, or its
    projection) and return ``m / (sqrt(v) + eps)`` and the step size ``lr sqrt(1 - beta2^t) / (1 - beta1^t)``
    (``lr`` without ``correct_bias``)."""
    beta1, beta2 = group["betas"]
    exp_avg = ps.load("exp_avg", grad.dtype)
    exp_avg_sq = ps.load("exp_avg_sq", grad.dtype)
    exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    ps.store("exp_avg", exp_avg)
    ps.store("exp_avg_sq", exp_avg_sq)
    denom = exp_avg_sq.sqrt().add_(group["eps"])
    step_size = group["lr"]
    if group["correct_bias"]:
        step_size = step_size * math.sqrt(1.0 - beta2**ps.step) / (1.0 - beta1**ps.step)
    return exp_avg / denom, step_size


def hf_adam_apply(ps: ParamStep, group: dict, update: torch.Tensor, step_size: float) -> None:
    """``W <- W - step_size * update``, then the decoupled decay ``W <- W (1 - lr wd)`` of the updated weight."""
    ps.work.add_(update, alpha=-step_size)
    if group["weight_decay"] > 0.0:
        ps.work.add_(ps.work, alpha=-group["lr"] * group["weight_decay"])


def rebuilds_projector(step: int, gap: int, schedule: str) -> bool:
    """Whether the projector is (re)built at ``step`` (counted from 1): ``"memopt"``: steps ``1, T, 2T, ...``
    (Subspace-Momentum's); ``"galore"``: ``1, 1 + T, 1 + 2T, ...`` (the packages test their step counter before
    incrementing it)."""
    if schedule == "galore":
        return (step - 1) % gap == 0
    return step == 1 or step % gap == 0


def check_projected_group(group: dict, group_index: int, method: str, registry_name: str) -> None:
    """The options of a group with ``rank`` (``None``: plain AdamW, nothing to check) and its parameters:
    matrices only, with a message naming the parameter and the fix."""
    if group["rank"] is None:
        return
    check_positive_int("rank", group["rank"])
    check_positive_int("update_proj_gap", group["update_proj_gap"])
    check_choice("proj_schedule", group["proj_schedule"], PROJ_SCHEDULES)
    if "proj_type" in group:
        check_choice("proj_type", group["proj_type"], projectors.PROJ_TYPES)
    if not isinstance(group["proj_seed"], int):
        raise ValueError(f"Invalid proj_seed: {group['proj_seed']!r}. proj_seed must be an integer.")
    for position, param in enumerate(group["params"]):
        if param.ndim != 2:
            raise ValueError(
                f"{param_name(group, group_index, position, param)} has shape {tuple(param.shape)}, but {method} "
                "projects matrices (2-D). Put it in a group with rank=None (AdamW), or build the optimizer with "
                f"memopt.build_optimizer(model, {registry_name!r}), which projects the hidden matrices only."
            )


class ProjectedAdamBase(MemoptBase):
    """What GaLore-AdamW and APOLLO share: groups with ``rank`` (projected matrices) or without (AdamW), the
    HF-style AdamW options, and a step that runs :attr:`update` on each parameter.

    Subclasses set ``method`` and ``registry_name`` (for messages) and ``update(ps, group)``."""

    method = ""
    registry_name = ""

    @staticmethod
    def update(ps: ParamStep, group: dict) -> None:
        raise NotImplementedError

    def _complete_group(self, group: dict) -> None:
        if isinstance(group["betas"], list):
            group["betas"] = tuple(group["betas"])

    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        for key in ("lr", "eps", "weight_decay", "scale"):
            check_non_negative(key, group[key])
        check_betas(group["betas"])
        check_bool("correct_bias", group["correct_bias"])
        check_projected_group(group, group_index, self.method, self.registry_name)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step from the gradients in ``.grad`` (``closure``, if given, recomputes them first)."""
        return self._step_each(closure, type(self).update)
