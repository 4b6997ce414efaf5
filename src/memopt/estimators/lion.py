"""Lion's momentum: the sign of an interpolation of momentum and gradient (Chen et al., "Symbolic Discovery
of Optimization Algorithms", NeurIPS 2023, arXiv 2302.06675, Algorithm 2).

With ``beta1, beta2 = betas``::

    c_t = beta1 m_{t-1} + (1 - beta1) g_t          (the interpolation the update uses)
    N_t = sign(c_t)                                  (every coordinate moves by exactly lr)
    m_t = beta2 m_{t-1} + (1 - beta2) g_t            (the momentum kept, one buffer)

With no second moment (``second_moment_type="none"``) and decoupled weight decay, the engine's step is the
paper's ``theta_t = theta_{t-1} - lr (sign(c_t) + wd theta_{t-1})``. No bias correction (``m_0 = 0`` only
damps ``c_t`` before its sign is taken). ``sign(0) = 0``, as ``torch.sign``.
"""

from __future__ import annotations

import torch

from memopt.estimators.base import MomentumEstimator, ParamStep
from memopt.estimators.registry import register_estimator
from memopt.state.template import StateSlot, like_param


@register_estimator("lion")
class LionMomentum(MomentumEstimator):
    """``N_t = sign(beta1 m_{t-1} + (1 - beta1) g_t)``, then ``m_t = beta2 m_{t-1} + (1 - beta2) g_t``."""

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        return {"exp_avg": like_param(param)}

    def numerator(self, ps: ParamStep, group: dict) -> torch.Tensor:
        beta1, beta2 = group["betas"]
        exp_avg = ps.load("exp_avg", ps.grad.dtype)
        update = exp_avg.mul(beta1).add_(ps.grad, alpha=1 - beta1).sign_()
        exp_avg.mul_(beta2).add_(ps.grad, alpha=1 - beta2)
        ps.store("exp_avg", exp_avg)
        return update
