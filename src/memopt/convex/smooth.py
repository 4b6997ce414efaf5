"""Gradient descent and Nesterov's accelerated gradient for smooth convex functions (Bubeck 2015, Ch. 3).

Each solver takes the gradient as a callable on 1-D tensors, returns a :class:`~memopt.convex.history.Result`
and, when given ``monitor`` (usually the objective), records it at the output point after every iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from memopt.convex.history import (
    History,
    Result,
    check_positive,
    check_steps,
    check_vector,
    step_schedule,
)

Tensor = torch.Tensor
Oracle = Callable[[Tensor], Tensor]
Monitor = Callable[[Tensor], float | Tensor]


def gradient_descent(
    grad: Oracle,
    x0: Tensor,
    *,
    step: float | Callable[[int], float],
    n_steps: int,
    project: Callable[[Tensor], Tensor] | None = None,
    monitor: Monitor | None = None,
    keep_iterates: bool = False,
) -> Result:
    r"""(Projected) gradient descent.

    Update (Bubeck 2015, §3.2 and §3.2.1): :math:`x_{t+1} = \Pi_{\mathcal X}(x_t - \eta_t \nabla f(x_t))`
    (no projection when ``project`` is ``None``). Output: the last iterate.

    Rates with ``step = 1/beta`` for a convex ``beta``-smooth ``f``: Theorem 3.3
    :math:`f(x_t) - f^* \le 2\beta\|x_1 - x^*\|^2/(t-1)` (unconstrained), Theorem 3.7
    :math:`(3\beta\|x_1-x^*\|^2 + f(x_1) - f^*)/t` (projected); if ``f`` is also ``alpha``-strongly convex,
    Theorem 3.10 gives :math:`\|x_{t+1}-x^*\|^2 \le e^{-t/\kappa}\|x_1-x^*\|^2`, and ``step = 2/(alpha+beta)``
    (Theorem 3.12, unconstrained) contracts the distance by :math:`(\kappa-1)/(\kappa+1)` per step.

    Args:
        grad: ``x -> grad f(x)``.
        x0: starting point ``x_1`` (1-D).
        step: a constant ``eta > 0`` or a rule ``s -> eta_s`` (``s = 1, 2, ...``).
        n_steps: number of iterations.
        project: Euclidean projection onto the feasible set, or ``None``.
        monitor: e.g. the objective; recorded at every iterate.
        keep_iterates: keep every iterate in ``history.iterates``.
    """
    eta = step_schedule("step", step)
    check_steps(n_steps)
    x = check_vector("x0", x0)
    prox = (lambda v, e: v) if project is None else (lambda v, e: project(v))
    return proximal_gradient_loop(grad, prox, x, eta, n_steps, monitor, keep_iterates)


def proximal_gradient_loop(
    grad: Oracle,
    prox: Callable[[Tensor, float], Tensor],
    x: Tensor,
    eta: Callable[[int], float],
    n_steps: int,
    monitor: Monitor | None = None,
    keep_iterates: bool = False,
) -> Result:
    """The loop of (projected) gradient descent, shared with ISTA (:func:`~memopt.convex.composite.ista`):
    ``x_{s+1} = prox(x_s - eta(s) grad(x_s), eta(s))``; output and monitored point: the last iterate."""
    history = History()
    history.record(x, 0, monitor, keep_iterates)
    for s in range(1, n_steps + 1):
        e = eta(s)
        x = prox(x - e * grad(x), e)
        history.record(x, s, monitor, keep_iterates)
    return Result(x, history)


def agd_lambdas(n: int) -> list[float]:
    r"""Nesterov's sequence :math:`\lambda_0 = 0`, :math:`\lambda_t = (1 + \sqrt{1 + 4\lambda_{t-1}^2})/2`,
    returned as ``[lambda_0, ..., lambda_n]`` (Bubeck 2015, §3.7.2)."""
    lambdas = [0.0]
    for _ in range(n):
        lambdas.append((1 + math.sqrt(1 + 4 * lambdas[-1] ** 2)) / 2)
    return lambdas


def nesterov_agd(
    grad: Oracle,
    x0: Tensor,
    *,
    beta: float,
    n_steps: int,
    monitor: Monitor | None = None,
    keep_iterates: bool = False,
) -> Result:
    r"""Nesterov's accelerated gradient descent for a convex ``beta``-smooth ``f`` (unconstrained).

    Update (Bubeck 2015, §3.7.2): :math:`x_1 = y_1 = x_0`; :math:`y_{t+1} = x_t - \frac1\beta\nabla f(x_t)`,
    :math:`x_{t+1} = (1-\gamma_t) y_{t+1} + \gamma_t y_t` with :math:`\gamma_t = (1-\lambda_t)/\lambda_{t+1}`
    (:func:`agd_lambdas`; the printed :math:`(1-\gamma_s)` in the first coefficient is a misprint for
    :math:`\gamma_t`). Output and monitored point: :math:`y_t`.

    Rate (Theorem 3.19): :math:`f(y_t) - f^* \le 2\beta\|x_1 - x^*\|^2 / t^2`.
    """
    beta = check_positive("beta", beta, "Pass the smoothness constant (largest Hessian eigenvalue).")
    check_steps(n_steps)
    x = check_vector("x0", x0)
    return accelerated_loop(lambda x: x - grad(x) / beta, x, n_steps, monitor, keep_iterates)


def accelerated_loop(
    descend: Oracle, x: Tensor, n_steps: int, monitor: Monitor | None = None, keep_iterates: bool = False
) -> Result:
    r"""The loop of Nesterov's AGD (§3.7.2), shared with FISTA (:func:`~memopt.convex.composite.fista`):
    :math:`x_1 = y_1 = x`; :math:`y_{t+1}` = ``descend(x_t)``, :math:`x_{t+1} = (1-\gamma_t)y_{t+1} + \gamma_t y_t`
    with :math:`\gamma_t = (1-\lambda_t)/\lambda_{t+1}` (:func:`agd_lambdas`). Output and monitored point:
    :math:`y_t`."""
    y = x.clone()
    lambdas = agd_lambdas(n_steps + 1)
    history = History()
    history.record(y, 0, monitor, keep_iterates)
    for t in range(1, n_steps + 1):
        gamma = (1 - lambdas[t]) / lambdas[t + 1]
        y_next = descend(x)
        x = (1 - gamma) * y_next + gamma * y
        y = y_next
        history.record(y, t, monitor, keep_iterates)
    return Result(y, history)


def nesterov_agd_strongly_convex(
    grad: Oracle,
    x0: Tensor,
    *,
    alpha: float,
    beta: float,
    n_steps: int,
    monitor: Monitor | None = None,
    keep_iterates: bool = False,
) -> Result:
    r"""Nesterov's accelerated gradient descent for an ``alpha``-strongly convex, ``beta``-smooth ``f``.

    Update (Bubeck 2015, §3.7.1): :math:`x_1 = y_1 = x_0`; :math:`y_{t+1} = x_t - \frac1\beta\nabla f(x_t)`,
    :math:`x_{t+1} = (1 + q) y_{t+1} - q\,y_t` with :math:`q = (\sqrt\kappa - 1)/(\sqrt\kappa + 1)`,
    :math:`\kappa = \beta/\alpha`. Output and monitored point: :math:`y_t`.

    Rate (Theorem 3.18): :math:`f(y_t) - f^* \le \frac{\alpha+\beta}2\|x_1-x^*\|^2\exp(-\frac{t-1}{\sqrt\kappa})`.
    """
    alpha = check_positive("alpha", alpha, "Pass the strong-convexity constant (smallest Hessian eigenvalue).")
    beta = check_positive("beta", beta, "Pass the smoothness constant (largest Hessian eigenvalue).")
    if alpha > beta:
        raise ValueError(f"alpha ({alpha}) must be <= beta ({beta}): a function cannot be more strongly convex "
                         "than it is smooth; check the two constants.")
    check_steps(n_steps)
    root = math.sqrt(beta / alpha)
    q = (root - 1) / (root + 1)
    x = check_vector("x0", x0)
    y = x.clone()
    history = History()
    history.record(y, 0, monitor, keep_iterates)
    for t in range(1, n_steps + 1):
        y_next = x - grad(x) / beta
        x = (1 + q) * y_next - q * y
        y = y_next
        history.record(y, t, monitor, keep_iterates)
    return Result(y, history)
