r"""Composite problems :math:`\min_x f(x) + g(x)` with smooth ``f`` and "simple" ``g``: proximal operators,
ISTA and FISTA (Bubeck 2015, §5.1; Beck & Teboulle 2009), and :class:`FISTA` as a ``torch.optim.Optimizer``.

A proximal operator here is a callable ``prox(v, eta)`` returning
:math:`\arg\min_x g(x) + \frac1{2\eta}\|x - v\|_2^2`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from memopt.convex.history import (
    Result,
    check_nonnegative,
    check_positive,
    check_steps,
    check_vector,
    step_schedule,
)
from memopt.convex.smooth import accelerated_loop, proximal_gradient_loop

Tensor = torch.Tensor
Prox = Callable[[Tensor, float], Tensor]


def soft_threshold(v: Tensor, a: float) -> Tensor:
    r""":math:`\tau_a(v) = \mathrm{sign}(v)(|v| - a)_+`, the prox of :math:`a\|\cdot\|_1`."""
    return torch.sign(v) * torch.clamp(v.abs() - a, min=0.0)


def prox_l1(lam: float) -> Prox:
    r"""Prox of :math:`g = \lambda\|x\|_1`: :math:`\tau_{\lambda\eta}(v)` (soft thresholding, §5.1)."""
    lam = check_nonnegative("lam", lam, "The l1 weight lambda must be >= 0.")
    return lambda v, eta: soft_threshold(v, lam * eta)


def prox_nonneg() -> Prox:
    r"""Prox of the indicator of :math:`\{x \ge 0\}`: :math:`\max(v, 0)`."""
    return lambda v, eta: torch.clamp(v, min=0.0)


def prox_l1_nonneg(lam: float) -> Prox:
    r"""Prox of :math:`\lambda\|x\|_1 + \iota_{x\ge0}`: :math:`\max(v - \lambda\eta, 0)`."""
    lam = check_nonnegative("lam", lam, "The l1 weight lambda must be >= 0.")
    return lambda v, eta: torch.clamp(v - lam * eta, min=0.0)


def ista(
    grad: Callable[[Tensor], Tensor],
    prox: Prox,
    x0: Tensor,
    *,
    step: float | Callable[[int], float],
    n_steps: int,
    monitor: Callable[[Tensor], float | Tensor] | None = None,
    keep_iterates: bool = False,
) -> Result:
    r"""ISTA, proximal gradient descent.

    Update (Bubeck 2015, §5.1): :math:`x_{t+1} = \arg\min_x g(x) + \frac1{2\eta}\|x - (x_t - \eta\nabla f(x_t))\|^2`
    = ``prox(x_t - eta grad(x_t), eta)``. Rate with :math:`\eta = 1/\beta`:
    :math:`F(x_t) - F^* \le \beta\|x_1 - x^*\|^2/(2t)`.
    """
    eta = step_schedule("step", step)
    check_steps(n_steps)
    return proximal_gradient_loop(grad, prox, check_vector("x0", x0), eta, n_steps, monitor, keep_iterates)


def fista(
    grad: Callable[[Tensor], Tensor],
    prox: Prox,
    x0: Tensor,
    *,
    beta: float,
    n_steps: int,
    monitor: Callable[[Tensor], float | Tensor] | None = None,
    keep_iterates: bool = False,
) -> Result:
    r"""FISTA (Beck & Teboulle 2009), in the form of Bubeck 2015, §5.1.

    Update: :math:`x_1 = y_1 = x_0`; :math:`y_{t+1} = \arg\min_x g(x) + \frac\beta2\|x - (x_t - \frac1\beta
    \nabla f(x_t))\|^2`; :math:`x_{t+1} = (1-\gamma_t)y_{t+1} + \gamma_t y_t`, with the
    :math:`\lambda_t, \gamma_t` of Nesterov's AGD (§3.7.2). Output (monitored): :math:`y_t`.
    Rate: :math:`F(y_t) - F^* \le 2\beta\|x_1 - x^*\|^2/t^2`.
    """
    beta = check_positive("beta", beta, "Pass the smoothness constant of f (e.g. ||A||^2/n for least squares).")
    check_steps(n_steps)
    x = check_vector("x0", x0)
    return accelerated_loop(lambda x: prox(x - grad(x) / beta, 1.0 / beta), x, n_steps, monitor, keep_iterates)


PROXES = ("none", "l1", "nonneg", "l1_nonneg")


def _group_prox(group: dict[str, Any]) -> Prox:
    name, lam = group["prox"], group["l1"]
    if name == "none":
        return lambda v, eta: v
    if name == "l1":
        return prox_l1(lam)
    if name == "nonneg":
        return prox_nonneg()
    return prox_l1_nonneg(lam)


class FISTA(torch.optim.Optimizer):
    r"""FISTA as a ``torch.optim.Optimizer``: accelerated proximal gradient with a prox per parameter group.

    For every parameter ``p`` (which holds the extrapolated point :math:`x_t` where gradients are taken)
    one ``step()`` does, with :math:`\eta` = ``lr`` (:math:`1/\beta` for a ``beta``-smooth loss):

    .. math::
        y_{t+1} = \mathrm{prox}_{\eta g}(x_t - \eta\nabla f(x_t)),\qquad
        x_{t+1} = (1-\gamma_t)y_{t+1} + \gamma_t y_t,\qquad
        \gamma_t = (1-\lambda_t)/\lambda_{t+1},

    with :math:`\lambda_0 = 0`, :math:`\lambda_t = (1+\sqrt{1+4\lambda_{t-1}^2})/2` (Bubeck 2015, §5.1 and §3.7.2;
    Beck & Teboulle 2009). :math:`g` is chosen per group by ``prox``: ``"none"``, ``"l1"``
    (:math:`\lambda\|x\|_1`, :math:`\lambda` = ``l1``), ``"nonneg"`` (:math:`x \ge 0`) or ``"l1_nonneg"``.

    The answer is :math:`y_t`, kept in ``state[p]["y"]``; :meth:`solution` returns it and
    :meth:`load_solution` copies it into the parameters (do that after the last step: the extrapolated
    :math:`x_t` need not be sparse or feasible). State per parameter: ``step`` (a tensor, as in torch.optim),
    ``lambda`` (:math:`\lambda_t`, a float tensor) and ``y``. With ``restart=True`` (O'Donoghue & Candès 2015,
    our addition, off by default) the momentum is reset whenever :math:`(y_{t+1}-y_t)^\top(x_t - y_{t+1})>0`.

    Args:
        params: parameters or parameter groups.
        lr: step size :math:`\eta > 0` (``1/beta``).
        prox: ``"none"``, ``"l1"``, ``"nonneg"`` or ``"l1_nonneg"``.
        l1: the weight :math:`\lambda \ge 0` of the l1 term.
        restart: gradient-based adaptive restart.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        prox: str = "none",
        l1: float = 0.0,
        restart: bool = False,
    ) -> None:
        _check_group({"lr": lr, "prox": prox, "l1": l1, "restart": restart})
        super().__init__(params, {"lr": lr, "prox": prox, "l1": l1, "restart": restart})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        param_group = {**param_group, "params": [params] if torch.is_tensor(params) else list(params)}
        _check_group({**self.defaults, **param_group})
        for p in param_group["params"]:
            if p.is_sparse or p.is_complex():
                raise ValueError("FISTA supports dense real parameters only; convert sparse/complex tensors first.")
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One FISTA step on every parameter with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            _check_group(group)
            prox = _group_prox(group)
            eta = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("FISTA does not support sparse gradients.")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["lambda"] = torch.tensor(1.0, dtype=torch.float64)  # lambda_1 = 1 (lambda_0 = 0)
                    state["y"] = p.detach().clone()
                lam = float(state["lambda"])
                lam_next = (1 + (1 + 4 * lam * lam) ** 0.5) / 2
                gamma = (1 - lam) / lam_next
                y_prev = state["y"]
                y_next = prox(p - eta * p.grad, eta)
                if group["restart"] and float(((y_next - y_prev) * (p - y_next)).sum()) > 0:
                    lam_next, gamma = 1.0, 0.0
                p.copy_((1 - gamma) * y_next + gamma * y_prev)
                state["y"] = y_next
                state["lambda"] = torch.tensor(lam_next, dtype=torch.float64)
                state["step"] += 1
        return loss

    def solution(self) -> list[Tensor]:
        """The current answers :math:`y_t`, one per parameter (the parameter itself before the first step)."""
        return [self.state[p]["y"] if "y" in self.state[p] else p.detach()
                for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def load_solution(self) -> None:
        """Copy :math:`y_t` into every parameter (ends the run's extrapolation: call it after the last step)."""
        for group in self.param_groups:
            for p in group["params"]:
                if "y" in self.state[p]:
                    p.copy_(self.state[p]["y"])


def _check_group(group: dict[str, Any]) -> None:
    check_positive("lr", group["lr"], "FISTA needs lr = 1/beta for a beta-smooth loss, e.g. lr=0.1.")
    if group["prox"] not in PROXES:
        raise ValueError(f"prox must be one of {PROXES}, got {group['prox']!r}; for an l1 penalty use prox='l1', "
                         "l1=<weight>.")
    check_nonnegative("l1", group["l1"], "The l1 weight must be >= 0 (0 turns the penalty off).")
    if group["l1"] > 0 and group["prox"] not in ("l1", "l1_nonneg"):
        raise ValueError(f"l1={group['l1']} has no effect with prox={group['prox']!r}; use prox='l1' or "
                         "'l1_nonneg'.")
    if not isinstance(group["restart"], bool):
        raise ValueError(f"restart must be True or False, got {group['restart']!r}.")
