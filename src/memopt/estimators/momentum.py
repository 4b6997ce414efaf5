"""Momentum estimators that keep a buffer of the parameter's full shape (or none at all).

* :class:`NoMomentum`: ``N_t = g_t``.
* :class:`EMAMomentum` (Adam's first moment): ``m_t = beta1 m_{t-1} + (1 - beta1) g_t``, ``N_t = m_t``,
  bias correction ``1 - beta1^t`` when the group has ``bias_correction=True``.
* :class:`HeavyBallMomentum` (``torch.optim.SGD``): ``b_1 = g_1``, ``b_t = mu b_{t-1} + (1 - dampening) g_t``,
  ``N_t = b_t`` or, with Nesterov, ``N_t = g_t + mu b_t``.

Subspace-Momentum, whose buffer lives in a low-dimensional projection, is in :mod:`.subspace_momentum`.
"""

from __future__ import annotations

import torch

from memopt.estimators.base import MomentumEstimator, ParamStep
from memopt.estimators.registry import register_estimator
from memopt.state.template import StateSlot, like_param
from memopt.validation import check_fraction, check_non_negative


def ema_bias_correction(group: dict, step: int) -> float:
    """``1 - beta1^t`` when the group bias-corrects an EMA momentum (``beta1 > 0``), else 1."""
    beta1 = group["betas"][0]
    return 1 - beta1**step if group["bias_correction"] and beta1 > 0 else 1.0


@register_estimator("none")
class NoMomentum(MomentumEstimator):
    """``N_t = g_t``; no state."""

    def numerator(self, ps: ParamStep, group: dict) -> torch.Tensor:
        return ps.grad


@register_estimator("ema")
class EMAMomentum(MomentumEstimator):
    """Exponential moving average of gradients, ``m_t = beta1 m_{t-1} + (1 - beta1) g_t`` (Adam).

    ``beta1 = betas[0]``; with ``beta1 = 0`` the buffer is skipped and ``N_t = g_t``.
    """

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        return {"exp_avg": like_param(param)} if group["betas"][0] > 0 else {}

    def numerator(self, ps: ParamStep, group: dict) -> torch.Tensor:
        beta1 = group["betas"][0]
        if beta1 == 0:
            return ps.grad
        exp_avg = ps.load("exp_avg", ps.grad.dtype)
        exp_avg.lerp_(ps.grad, 1 - beta1)
        ps.store("exp_avg", exp_avg)
        return exp_avg

    def bias_correction(self, group: dict, step: int) -> float:
        return ema_bias_correction(group, step)

    def numerator_many(self, steps: list[ParamStep], group: dict) -> list[torch.Tensor]:
        beta1 = group["betas"][0]
        if beta1 == 0:
            return [ps.grad for ps in steps]
        buffers = [ps.state["exp_avg"] for ps in steps]
        torch._foreach_lerp_(buffers, [ps.grad for ps in steps], 1 - beta1)
        return buffers


@register_estimator("heavy_ball")
class HeavyBallMomentum(MomentumEstimator):
    """Heavy-ball momentum as in ``torch.optim.SGD``: ``b_1 = g_1``; ``b_t = mu b_{t-1} + (1 - dampening) g_t``.

    Hyperparameters: ``momentum`` (mu), ``dampening``, ``nesterov`` (``N_t = g_t + mu b_t``).
    """

    hyperparameters = {"momentum": 0.0, "dampening": 0.0, "nesterov": False}

    def validate_group(self, group: dict) -> None:
        check_non_negative("momentum", group["momentum"])
        check_fraction("dampening", group["dampening"], allow_one=True)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Invalid nesterov=True with momentum="
                f"{group['momentum']} and dampening={group['dampening']}: Nesterov momentum requires "
                "momentum > 0 and dampening = 0."
            )

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        return {"momentum_buffer": like_param(param)} if group["momentum"] > 0 else {}

    def numerator(self, ps: ParamStep, group: dict) -> torch.Tensor:
        mu = group["momentum"]
        if mu == 0:
            return ps.grad
        buffer = ps.load("momentum_buffer", ps.grad.dtype)
        if ps.step == 1:
            buffer.copy_(ps.grad)
        else:
            buffer.mul_(mu).add_(ps.grad, alpha=1 - group["dampening"])
        ps.store("momentum_buffer", buffer)
        return ps.grad.add(buffer, alpha=mu) if group["nesterov"] else buffer
