"""Riemannian Adam and AMSGrad (Bécigneul & Ganea, "Riemannian Adaptive Optimization Methods", ICLR 2019).

For each product factor ``i`` (a point of a ball, a Stiefel frame; a coordinate of a Euclidean
parameter), with ``g`` the Riemannian gradient at ``x_t`` and ``tau`` the previous momentum already
transported to ``T_{x_t}``::

    m_t   = beta1 tau_{t-1} + (1 - beta1) g_t                          (a tangent vector)
    v_t   = beta2 v_{t-1} + (1 - beta2) ||g_t||^2_{x_t}                 (one scalar per factor)
    vhat  = max(vhat_{t-1}, v_t)          (AMSGrad; Adam: vhat = v_t)
    x_t+1 = R_{x_t}( -lr (m_t / bc1) / (sqrt(vhat / bc2) + eps) )
    tau_t = transport of m_t from x_t to x_t+1

This is RAMSGRAD / RADAM of the paper's Figure 1 (RAMSGRAD shown next to Euclidean AMSGrad; RADAM drops the
max), with three implementation choices that the paper's pseudo-code does not make (it has constant-free
``alpha_t``, ``beta_1t``, no ``eps`` and no bias correction; the figure number and these details come from
our reading notes and could not be re-checked against the PDF): Adam's bias corrections
``bc1 = 1 - beta1^t``, ``bc2 = 1 - beta2^t`` (``bias_correction=False`` removes them, the paper's form), an
``eps`` added after the square root (geoopt's placement since its fix #181), and the manifold's retraction
``R`` and transport (the exponential map and parallel transport with ``PoincareBall(exact=True)``, the
paper's setting; ``x + u`` projected with the default ``PoincareBall``, its "retraction" setting). ``v`` is
not transported: ``||g||^2_x`` is invariant under isometries.

On the Euclidean manifold (plain parameters) every coordinate is a factor and the update is exactly
``torch.optim.Adam`` (``amsgrad`` included), as the paper states.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from memopt.estimators.base import ParamStep
from memopt.optim.template import StateSlot
from memopt.riemannian.base import RiemannianBase
from memopt.validation import check_betas, check_bool, check_non_negative

Params = Iterable[torch.Tensor] | Iterable[dict]


class RiemannianAdam(RiemannianBase):
    """Riemannian Adam (RADAM), or RAMSGRAD with ``amsgrad=True``.

    Args:
        params: parameters or groups; :class:`memopt.manifolds.ManifoldParameter` s step on their manifold,
            others as Euclidean.
        lr: step size. betas: ``(beta1, beta2)``. eps: added to ``sqrt(v / bc2)``.
        weight_decay: coupled L2 (added to the Euclidean gradient, as geoopt does).
        amsgrad: keep the running maximum of ``v`` (RAMSGRAD).
        bias_correction: Adam's ``1 - beta^t`` corrections (False: the paper's literal form).
        stabilize: every ``stabilize`` steps of a parameter, re-project it and its momentum (None: never).

    State per parameter: ``step``, ``exp_avg`` (tangent vector, parameter shape), ``exp_avg_sq`` (and
    ``max_exp_avg_sq``) with one value per factor.
    """

    momentum_key: ClassVar[str | None] = "exp_avg"

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        amsgrad: bool = False,
        bias_correction: bool = True,
        stabilize: int | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            bias_correction=bias_correction, stabilize=stabilize,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict) -> None:
        if isinstance(group["betas"], list):
            group["betas"] = tuple(group["betas"])
        check_betas(group["betas"], allow_beta2_one=False)
        check_non_negative("eps", group["eps"])
        check_bool("amsgrad", group["amsgrad"])
        check_bool("bias_correction", group["bias_correction"])

    def _state_slots(self, param: torch.Tensor, group: dict, manifold: Any) -> dict[str, StateSlot]:
        slots = {
            "exp_avg": StateSlot("elementwise", tuple(param.shape)),
            "exp_avg_sq": self._component_slot(param, manifold),
        }
        if group["amsgrad"]:
            slots["max_exp_avg_sq"] = self._component_slot(param, manifold)
        return slots

    def _update(self, ps: ParamStep, group: dict, manifold: Any, rgrad: torch.Tensor) -> None:
        beta1, beta2 = group["betas"]
        dtype = ps.work.dtype
        exp_avg = ps.load("exp_avg", dtype).mul_(beta1).add_(rgrad, alpha=1 - beta1)
        exp_avg_sq = ps.load("exp_avg_sq", dtype).mul_(beta2)
        exp_avg_sq.add_(manifold.component_inner(ps.work, rgrad), alpha=1 - beta2)
        ps.store("exp_avg_sq", exp_avg_sq)
        second = exp_avg_sq
        if group["amsgrad"]:
            second = torch.maximum(ps.load("max_exp_avg_sq", dtype), exp_avg_sq)
            ps.store("max_exp_avg_sq", second)
        bc1 = 1 - beta1**ps.step if group["bias_correction"] else 1.0
        bc2 = 1 - beta2**ps.step if group["bias_correction"] else 1.0
        denom = manifold.expand_components(second.div(bc2).sqrt_().add_(group["eps"]), ps.work)
        direction = exp_avg.div(bc1).div_(denom)
        point, exp_avg = manifold.retr_transp(ps.work, direction.mul_(-group["lr"]), exp_avg)
        ps.work.copy_(point)
        ps.store("exp_avg", exp_avg)


class RiemannianAMSGrad(RiemannianAdam):
    """RAMSGRAD: :class:`RiemannianAdam` with ``amsgrad=True`` (the paper's main algorithm)."""

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        bias_correction: bool = True,
        stabilize: int | None = None,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad=True, bias_correction=bias_correction, stabilize=stabilize
        )
