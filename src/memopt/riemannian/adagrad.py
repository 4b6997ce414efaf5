"""Riemannian AdaGrad (RADAGRAD of Bécigneul & Ganea, ICLR 2019).

For each product factor ``i``, with ``g`` the Riemannian gradient at ``x_t``::

    s_t   = s_{t-1} + ||g_t||^2_{x_t}                       (one scalar per factor, never transported)
    x_t+1 = R_{x_t}( -lr_t g_t / (sqrt(s_t) + eps) ),   lr_t = lr / (1 + (t - 1) lr_decay)

No momentum, hence no transport. ``eps`` (after the square root) and ``lr_decay`` follow
``torch.optim.Adagrad``, which this is on the Euclidean manifold (plain parameters).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from memopt.estimators.base import ParamStep
from memopt.optim.template import StateSlot
from memopt.riemannian.base import RiemannianBase
from memopt.validation import check_non_negative

Params = Iterable[torch.Tensor] | Iterable[dict]


class RiemannianAdagrad(RiemannianBase):
    """RADAGRAD: AdaGrad with one accumulator of ``||g||_x^2`` per product factor.

    Args:
        params: parameters or groups (ManifoldParameters on their manifold, others Euclidean).
        lr, lr_decay, eps, initial_accumulator_value: as ``torch.optim.Adagrad``.
        weight_decay: coupled L2 (added to the Euclidean gradient).
        stabilize: every ``stabilize`` steps of a parameter, re-project it (None: never).

    State per parameter: ``step`` and ``sum`` (one value per factor).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        stabilize: int | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, initial_accumulator_value=initial_accumulator_value,
            eps=eps, stabilize=stabilize,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict) -> None:
        check_non_negative("lr_decay", group["lr_decay"])
        check_non_negative("initial_accumulator_value", group["initial_accumulator_value"])
        check_non_negative("eps", group["eps"])

    def _state_slots(self, param: torch.Tensor, group: dict, manifold: Any) -> dict[str, StateSlot]:
        return {"sum": self._component_slot(param, manifold, init=float(group["initial_accumulator_value"]))}

    def _update(self, ps: ParamStep, group: dict, manifold: Any, rgrad: torch.Tensor) -> None:
        total = ps.load("sum", ps.work.dtype).add_(manifold.component_inner(ps.work, rgrad))
        ps.store("sum", total)
        lr = group["lr"] / (1 + (ps.step - 1) * group["lr_decay"])
        denom = manifold.expand_components(total.sqrt().add_(group["eps"]), ps.work)
        ps.work.copy_(manifold.retr(ps.work, rgrad.div(denom).mul_(-lr)))
