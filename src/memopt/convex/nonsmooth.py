"""Projected subgradient descent for Lipschitz convex functions (Bubeck 2015, §3.1 and §3.4.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from memopt.convex.history import History, Result, check_positive, check_steps, check_vector, step_schedule

Tensor = torch.Tensor


def subgradient_descent(
    subgrad: Callable[[Tensor], Tensor],
    x0: Tensor,
    *,
    step: float | Callable[[int], float],
    n_steps: int,
    project: Callable[[Tensor], Tensor] | None = None,
    average: Literal["uniform", "linear", "last"] = "uniform",
    monitor: Callable[[Tensor], float | Tensor] | None = None,
    keep_iterates: bool = False,
) -> Result:
    r"""Projected subgradient descent.

    Update (Bubeck 2015, §3.1): :math:`y_{s+1} = x_s - \eta_s g_s`, :math:`g_s \in \partial f(x_s)`,
    :math:`x_{s+1} = \Pi_{\mathcal X}(y_{s+1})`. Output after ``t`` steps (the monitored point):

    * ``average="uniform"``: :math:`\frac1t\sum_{s=1}^t x_s`. Theorem 3.2: with :math:`\eta = R/(L\sqrt t)`,
      :math:`f - f^* \le RL/\sqrt t` (``R`` = radius of a ball around :math:`x_1` containing
      :math:`\mathcal X`, ``L`` = bound on the subgradients).
    * ``average="linear"``: :math:`\sum_{s=1}^t \frac{2s}{t(t+1)} x_s`. Theorem 3.9: for
      ``alpha``-strongly convex ``f`` and :math:`\eta_s = 2/(\alpha(s+1))` (see :func:`strongly_convex_steps`),
      :math:`f - f^* \le 2L^2/(\alpha(t+1))`.
    * ``average="last"``: :math:`x_{t+1}`.

    ``history.extra["best"]`` holds :math:`\min_{s} f(x_s)` over the iterates when a monitor is given.
    """
    eta = step_schedule("step", step)
    check_steps(n_steps)
    if average not in ("uniform", "linear", "last"):
        raise ValueError(f"average must be 'uniform', 'linear' or 'last', got {average!r}.")
    x = check_vector("x0", x0)
    total = torch.zeros_like(x)
    weight = 0.0
    best = float("inf")
    history = History()
    history.record(x, 0, monitor, keep_iterates)
    for s in range(1, n_steps + 1):
        w = float(s) if average == "linear" else 1.0
        total = total + w * x
        weight += w
        if monitor is not None:
            best = min(best, float(monitor(x)))
        x = x - eta(s) * subgrad(x)
        if project is not None:
            x = project(x)
        output = x if average == "last" else total / weight
        extra = {"best": best} if monitor is not None else {}
        history.record(output, s, monitor, keep_iterates, **extra)
    return Result(x if average == "last" else total / weight, history)


def strongly_convex_steps(alpha: float) -> Callable[[int], float]:
    r"""The step sizes :math:`\eta_s = 2/(\alpha(s+1))` of Bubeck 2015, Theorem 3.9 (use ``average="linear"``)."""
    alpha = check_positive("alpha", alpha, "Pass the strong-convexity constant.")
    return lambda s: 2.0 / (alpha * (s + 1))
