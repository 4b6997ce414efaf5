"""Conditional gradient (Frank–Wolfe) with linear minimization oracles (Bubeck 2015, §3.3)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from memopt.convex.history import History, Result, check_positive, check_steps, check_vector

Tensor = torch.Tensor


def simplex_lmo(g: Tensor) -> Tensor:
    r""":math:`\arg\min_{y \in \Delta_n} g^\top y`: the vertex :math:`e_i`, :math:`i = \arg\min_i g_i`."""
    y = torch.zeros_like(g)
    y[int(torch.argmin(g))] = 1.0
    return y


def l1_ball_lmo(radius: float) -> Callable[[Tensor], Tensor]:
    r"""The oracle of the :math:`\ell_1` ball of ``radius``: :math:`-r\,\mathrm{sign}(g_i) e_i`,
    :math:`i = \arg\max_i |g_i|`."""
    radius = check_positive("radius", radius)

    def lmo(g: Tensor) -> Tensor:
        y = torch.zeros_like(g)
        i = int(torch.argmax(g.abs()))
        y[i] = -radius * (1.0 if g[i] >= 0 else -1.0)
        return y

    return lmo


def frank_wolfe(
    grad: Callable[[Tensor], Tensor],
    lmo: Callable[[Tensor], Tensor],
    x0: Tensor,
    *,
    n_steps: int,
    monitor: Callable[[Tensor], float | Tensor] | None = None,
    keep_iterates: bool = False,
) -> Result:
    r"""Frank–Wolfe / conditional gradient descent.

    Update (Bubeck 2015, §3.3): :math:`y_t \in \arg\min_{y\in\mathcal X}\nabla f(x_t)^\top y` (``lmo``),
    :math:`x_{t+1} = (1-\gamma_t)x_t + \gamma_t y_t`, :math:`\gamma_t = 2/(t+1)`. Output: the last iterate.

    Theorem 3.8: for convex ``beta``-smooth ``f`` (any norm) and :math:`R = \mathrm{diam}\,\mathcal X`,
    :math:`f(x_t) - f^* \le 2\beta R^2/(t+1)` for :math:`t \ge 2`. ``history.extra["frank_wolfe_gap"]`` records
    :math:`\nabla f(x_t)^\top(x_t - y_t) \ge f(x_t) - f^*`, a computable certificate.
    """
    check_steps(n_steps)
    x = check_vector("x0", x0)
    history = History()
    history.record(x, 0, monitor, keep_iterates)
    for t in range(1, n_steps + 1):
        g = grad(x)
        y = lmo(g)
        gamma = 2.0 / (t + 1)
        gap = float(g @ (x - y))
        x = (1 - gamma) * x + gamma * y
        history.record(x, t, monitor, keep_iterates, frank_wolfe_gap=gap)
    return Result(x, history)
