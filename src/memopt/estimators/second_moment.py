"""Second-moment estimators that keep no statistics or one per coordinate.

Conventions shared by every second-moment estimator in memopt (``beta2 = betas[1]``):

* accumulation of a statistic ``S_t``: ``V_t = beta2 V_{t-1} + (1 - beta2) S_t`` when ``beta2 < 1``
  (Adam, RMSProp), ``V_t = V_{t-1} + S_t`` when ``beta2 = 1`` (AdaGrad);
* denominator, PyTorch style: ``D_t = sqrt(V_t / (1 - beta2^t)) + eps`` with bias correction, else
  ``sqrt(V_t) + eps``. With ``eps_placement="before_bias_correction"`` (the Subset-Norm paper's code, Hugging
  Face's AdamW) ``D_t = (sqrt(V_t) + eps) / sqrt(1 - beta2^t)``: the same with eps scaled by
  ``1 / sqrt(1 - beta2^t)`` (:func:`effective_eps`). Bias correction of a sum (``beta2 = 1``) is rejected: its
  correction is zero.
"""

from __future__ import annotations

import math

import torch

from memopt.estimators.base import ParamStep, SecondMomentEstimator
from memopt.estimators.registry import register_estimator
from memopt.state.template import StateSlot, like_param
from memopt.validation import check_non_negative


def accumulate(acc: torch.Tensor, stat: torch.Tensor, beta2: float) -> None:
    """``acc <- beta2 acc + (1 - beta2) stat`` for ``beta2 < 1``, ``acc <- acc + stat`` for ``beta2 = 1``."""
    if beta2 == 1:
        acc.add_(stat)
    else:
        acc.mul_(beta2).add_(stat, alpha=1 - beta2)


def root_correction(group: dict, step: int) -> float:
    """``sqrt(1 - beta2^t)`` when the group bias-corrects an EMA second moment, else 1."""
    beta2 = group["betas"][1]
    return math.sqrt(1 - beta2**step) if group["bias_correction"] and beta2 < 1 else 1.0


def effective_eps(group: dict, step: int) -> float:
    """The eps added after the root's correction: ``eps``, or ``eps / sqrt(1 - beta2^t)`` when the group adds it
    before the correction (``eps_placement="before_bias_correction"``)."""
    if group.get("eps_placement") == "before_bias_correction":
        return group["eps"] / root_correction(group, step)
    return group["eps"]


def denominator(acc: torch.Tensor, group: dict, step: int) -> torch.Tensor:
    """``sqrt(V / (1 - beta2^t)) + eps`` (or without the correction), as a new tensor."""
    return (acc.sqrt() / root_correction(group, step)).add_(effective_eps(group, step))


def check_accumulation(group: dict) -> None:
    """Reject bias correction of an AdaGrad sum (``beta2 = 1``): its correction ``1 - 1^t`` is zero."""
    if group["bias_correction"] and group["betas"][1] == 1:
        raise ValueError(
            "Invalid bias_correction=True with betas[1] (beta2) = 1: an AdaGrad-style sum has no bias to "
            "correct (1 - beta2^t = 0). Set bias_correction=False, or use beta2 < 1 for an EMA."
        )


@register_estimator("none")
class NoSecondMoment(SecondMomentEstimator):
    """No denominator: ``D_t = 1`` (SGD)."""


@register_estimator("coordinate")
class CoordinateSecondMoment(SecondMomentEstimator):
    """One accumulator per coordinate, ``S_t = g_t^2`` (Adam, RMSProp, AdaGrad).

    Hyperparameters: ``initial_accumulator_value`` (AdaGrad's starting sum) and ``centered``
    (RMSProp's variance estimate ``V_t - mean_t^2``, with ``mean_t`` an EMA of gradients).
    """

    hyperparameters = {"initial_accumulator_value": 0.0, "centered": False}

    def validate_group(self, group: dict) -> None:
        check_accumulation(group)
        check_non_negative("initial_accumulator_value", group["initial_accumulator_value"])
        if group["centered"] and group["betas"][1] == 1:
            raise ValueError("Invalid centered=True with betas[1] (beta2) = 1: centering needs an EMA (beta2 < 1).")

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        template = {"exp_avg_sq": like_param(param, non_negative=True, init=group["initial_accumulator_value"])}
        if group["centered"]:
            template["grad_avg"] = like_param(param)
        return template

    def update(self, ps: ParamStep, group: dict) -> None:
        beta2 = group["betas"][1]
        acc = ps.load("exp_avg_sq", ps.grad.dtype)
        accumulate(acc, ps.grad * ps.grad, beta2)
        ps.store("exp_avg_sq", acc)
        if group["centered"]:
            mean = ps.load("grad_avg", ps.grad.dtype)
            mean.lerp_(ps.grad, 1 - beta2)
            ps.store("grad_avg", mean)

    def precondition(self, numerator: torch.Tensor, ps: ParamStep, group: dict) -> torch.Tensor:
        acc = ps.load("exp_avg_sq", numerator.dtype)
        if group["centered"]:
            mean = ps.load("grad_avg", numerator.dtype)
            acc = acc.addcmul(mean, mean, value=-1)
        return numerator / denominator(acc, group, ps.step)

    def update_many(self, steps: list[ParamStep], group: dict) -> None:
        if group["centered"]:
            return super().update_many(steps, group)
        beta2 = group["betas"][1]
        accs = [ps.state["exp_avg_sq"] for ps in steps]
        grads = [ps.grad for ps in steps]
        if beta2 != 1:
            torch._foreach_mul_(accs, beta2)
        torch._foreach_addcmul_(accs, grads, grads, 1 - beta2 if beta2 != 1 else 1.0)

    def apply_many(self, steps, numerators, step_sizes, group) -> None:
        if group["centered"]:
            return super().apply_many(steps, numerators, step_sizes, group)
        denoms = torch._foreach_sqrt([ps.state["exp_avg_sq"] for ps in steps])
        corrections = [root_correction(group, ps.step) for ps in steps]
        if any(c != 1.0 for c in corrections):
            torch._foreach_div_(denoms, corrections)
        torch._foreach_add_(denoms, [effective_eps(group, ps.step) for ps in steps])
        torch._foreach_addcdiv_([ps.work for ps in steps], numerators, denoms, [-s for s in step_sizes])
