r"""Synchronous baselines for DADAO's comparison: decentralized gradient descent and MSDA.

Both count, per round, ``n`` local (primal or dual) gradients and one communication per activated edge, the
same counters as :class:`~memopt.decentralized.dadao.DADAO`, and record ``1/n sum_i ||x_i - x*||^2``.

* :func:`decentralized_gradient` (DGD; Nedic & Ozdaglar 2009): ``X <- W X - lr grad F(X)`` with the gossip
  matrix ``W = I - L_G / lambda_max(L_G)``. It is not exact: with a constant step it stalls at a distance
  ``O(lr)`` from ``x*`` (DADAO's paper lists it among the methods that need extra mechanisms to be exact).
* :func:`msda` (Scaman, Bach, Bubeck, Lee, Massoulie, ICML 2017, Algorithm 2, "multi-step dual
  accelerated"): Nesterov-accelerated gradient ascent on the dual of the consensus constraint, with the gossip
  matrix replaced by the Chebyshev polynomial ``P_K(W) = I - T_K(c2 (I - c3 W)) / T_K(c2)`` of the Laplacian
  ``W``. Constants (paper, as restated in the DADAO authors' code): eigengap ``g = lambda^+_min / lambda_max``,
  ``c1 = (1 - sqrt g)/(1 + sqrt g)``, ``c2 = (1 + g)/(1 - g)``, ``c3 = 2 / ((1 + g) lambda_max)``,
  ``K = floor(1/sqrt g)``, ``eta = mu (1 + c1^(2K)) / (1 + c1^K)^2``, momentum
  ``((1 + c1^K) sqrt(kappa) - 1 + c1^K) / ((1 + c1^K) sqrt(kappa) + 1 - c1^K)``. Each step computes
  ``theta_i = grad f_i^*(x_i)`` (a *dual* gradient: for a quadratic, a linear solve) and ``K`` gossip rounds;
  ``theta_i`` is the primal iterate that is recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from memopt.decentralized.dadao import Trace
from memopt.decentralized.graphs import Graph


def _check(rounds: int, record_every: int) -> None:
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}.")


def decentralized_gradient(
    graph: Graph,
    grads: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    lr: float,
    rounds: int,
    x_star: np.ndarray | None = None,
    record_every: int = 1,
) -> Trace:
    """DGD: ``X <- W X - lr grads(X)``; ``grads`` maps the ``(n, dim)`` iterates to the local gradients."""
    _check(rounds, record_every)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    lap = graph.laplacian()
    w = np.eye(graph.n) - lap / graph.quantities.lambda_max
    x = np.array(np.broadcast_to(x0, (graph.n, np.shape(x0)[-1])), dtype=np.float64)
    trace = Trace()
    trace.record(0, 0, 0, x, x_star)
    for k in range(1, rounds + 1):
        x = w @ x - lr * grads(x)
        if k % record_every == 0 or k == rounds:
            trace.record(k, k * graph.n, k * graph.num_edges, x, x_star)
    trace.x = x
    return trace


def chebyshev_gossip(lap: np.ndarray, v: np.ndarray, k: int, c2: float, c3: float) -> np.ndarray:
    """``P_K(W) v = v - T_K(c2 (I - c3 W)) v / T_K(c2)`` by the three-term recursion (``k`` products by
    ``W``, i.e. ``k`` communication rounds)."""
    a_prev, a_cur = 1.0, c2
    x_prev, x_cur = v, c2 * (v - c3 * (lap @ v))
    for _ in range(k - 1):
        a_prev, a_cur = a_cur, 2 * c2 * a_cur - a_prev
        x_prev, x_cur = x_cur, 2 * c2 * (x_cur - c3 * (lap @ x_cur)) - x_prev
    return v - x_cur / a_cur


def msda(
    graph: Graph,
    dual_grads: Callable[[np.ndarray], np.ndarray],
    dim: int,
    mu: float,
    L: float,
    rounds: int,
    x_star: np.ndarray | None = None,
    record_every: int = 1,
    k: int | None = None,
) -> Trace:
    """MSDA (Scaman et al. 2017, Algorithm 2) for ``rounds`` outer steps; ``k`` gossip rounds per step
    (default ``floor(1/sqrt(eigengap))``). ``dual_grads`` maps ``(n, dim)`` dual variables to
    ``grad f_i^*``."""
    _check(rounds, record_every)
    if not 0 < mu <= L:
        raise ValueError(f"need 0 < mu <= L, got mu={mu}, L={L}.")
    q = graph.quantities
    lap = graph.laplacian()
    gap = q.lambda_min_plus / q.lambda_max
    c1 = (1 - math.sqrt(gap)) / (1 + math.sqrt(gap))
    k = max(1, math.floor(1 / math.sqrt(gap))) if k is None else k
    if k < 1:
        raise ValueError(f"k (gossip rounds per step) must be >= 1, got {k}.")
    if gap < 1:
        c2, c3 = (1 + gap) / (1 - gap), 2 / ((1 + gap) * q.lambda_max)
        gossip = lambda v: chebyshev_gossip(lap, v, k, c2, c3)
        c1k = c1**k
    else:  # complete graph: all non-zero eigenvalues equal, one exact averaging round
        k, c1k = 1, 0.0
        gossip = lambda v: lap @ v / q.lambda_max
    kappa = L / mu
    eta = mu * (1 + c1k**2) / (1 + c1k) ** 2
    momentum = ((1 + c1k) * math.sqrt(kappa) - 1 + c1k) / ((1 + c1k) * math.sqrt(kappa) + 1 - c1k)
    x = np.zeros((graph.n, dim))
    y = x.copy()
    theta = dual_grads(x)
    trace = Trace()
    trace.record(0, 0, 0, theta, x_star)
    for t in range(1, rounds + 1):
        y_next = x - eta * gossip(theta)
        x = (1 + momentum) * y_next - momentum * y
        y = y_next
        theta = dual_grads(x)
        if t % record_every == 0 or t == rounds:
            trace.record(t, t * graph.n, t * k * graph.num_edges, theta, x_star)
    trace.x = theta
    return trace
