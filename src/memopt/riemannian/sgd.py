"""Riemannian SGD with momentum (Bonnabel 2013; momentum transported as in Bécigneul & Ganea, ICLR 2019).

With ``g`` the Riemannian gradient at ``x_t`` and ``b`` the previous buffer transported to ``T_{x_t}``::

    b_t   = g_t  (first step),    b_t = mu b_{t-1} + (1 - dampening) g_t  (later steps)
    d_t   = g_t + mu b_t  (nesterov)   or   b_t
    x_t+1 = R_{x_t}(-lr d_t),  b_t transported from x_t to x_t+1

Without momentum this is ``x <- R_x(-lr grad f(x))``; on the Poincaré ball with the default retraction
``proj(x + u)`` it is exactly Nickel & Kiela's update ``x <- proj(x - lr (1 - ||x||^2)^2 / 4 grad_E``).
On the Euclidean manifold (plain parameters) it is ``torch.optim.SGD``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from memopt.estimators.base import ParamStep
from memopt.optim.template import StateSlot
from memopt.riemannian.base import RiemannianBase
from memopt.validation import check_bool, check_fraction

Params = Iterable[torch.Tensor] | Iterable[dict]


class RiemannianSGD(RiemannianBase):
    """Riemannian SGD with optional (Nesterov) momentum; the momentum buffer is transported each step.

    Args:
        params: parameters or groups (ManifoldParameters on their manifold, others Euclidean).
        lr: step size. momentum, dampening, nesterov: as ``torch.optim.SGD``.
        weight_decay: coupled L2 (added to the Euclidean gradient).
        stabilize: every ``stabilize`` steps of a parameter, re-project it and its buffer (None: never).

    State per parameter: ``step`` and, with momentum, ``momentum_buffer`` (a tangent vector).
    """

    momentum_key: ClassVar[str | None] = "momentum_buffer"

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        *,
        nesterov: bool = False,
        stabilize: int | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            stabilize=stabilize,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict) -> None:
        check_fraction("momentum", group["momentum"], allow_one=False)
        check_fraction("dampening", group["dampening"], allow_one=True)
        check_bool("nesterov", group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Invalid nesterov=True: Nesterov momentum needs momentum > 0 and dampening = 0.")

    def _state_slots(self, param: torch.Tensor, group: dict, manifold: Any) -> dict[str, StateSlot]:
        return {"momentum_buffer": StateSlot("elementwise", tuple(param.shape))} if group["momentum"] else {}

    def _update(self, ps: ParamStep, group: dict, manifold: Any, rgrad: torch.Tensor) -> None:
        mu = group["momentum"]
        if not mu:
            ps.work.copy_(manifold.retr(ps.work, rgrad.mul(-group["lr"])))
            return
        buffer = ps.load("momentum_buffer", ps.work.dtype)
        if ps.step == 1:
            buffer.copy_(rgrad)
        else:
            buffer.mul_(mu).add_(rgrad, alpha=1 - group["dampening"])
        direction = rgrad.add(buffer, alpha=mu) if group["nesterov"] else buffer
        point, buffer = manifold.retr_transp(ps.work, direction.mul(-group["lr"]), buffer)
        ps.work.copy_(point)
        ps.store("momentum_buffer", buffer)
