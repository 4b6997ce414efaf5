"""Paper-literal STORM+ / META-STORM (general and SG) written with explicit time indices and full sums.

Written independently of ``memopt.accelerated.storm``: every quantity is a function of the whole history
(``G[t] = g(x_t; xi_t)``, ``C[t] = g(x_{t-1}; xi_t)``, ``D[t]``), sums and EMAs are recomputed from scratch
each step, and accumulators are kept per tensor (or per coordinate), as the optimizer does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Oracle = Callable[[list[torch.Tensor], object], list[torch.Tensor]]


def _accumulate(values: Sequence[torch.Tensor], ema: bool, beta: float, bias_correction: bool) -> torch.Tensor:
    """sum_i v_i, or the EMA (1 - beta) sum_i beta^(n - i) v_i (optionally / (1 - beta^n))."""
    n = len(values)
    if not ema:
        return sum(values)
    total = sum((1 - beta) * beta ** (n - i) * v for i, v in enumerate(values, start=1))
    return total / (1 - beta**n) if bias_correction else total


def storm_reference(
    x1: list[torch.Tensor],
    oracle: Oracle,
    samples: Sequence[object],
    *,
    rule: str,
    lr: float,
    a0: float,
    b0: float,
    p: float = 0.5,
    per_coordinate: bool = False,
    ema: bool = False,
    betas: tuple[float, float] = (0.99, 0.99),
    bias_correction: bool = False,
) -> list[list[torch.Tensor]]:
    """Iterates x_2 .. x_{T+1} for ``rule`` in {"general", "sg", "storm_plus"}; ``samples[t-1]`` is xi_t."""
    sq = (lambda v: v * v) if per_coordinate else (lambda v: (v * v).sum())
    q = (1 - p) / 2
    n_tensors = len(x1)
    X = {1: [x.clone() for x in x1]}
    G, C, D, A = {}, {}, {}, {}
    for t in range(1, len(samples) + 1):
        G[t] = oracle(X[t], samples[t - 1])
        if t >= 2:
            C[t] = oracle(X[t - 1], samples[t - 1])
        new_x = []
        D[t] = []
        for j in range(n_tensors):
            if rule == "general":
                diffs = [sq(G[i][j] - C[i + 1][j]) for i in range(1, t)]
                a_t = (1 + _accumulate(diffs, ema, betas[0], bias_correction) / a0) ** (-2.0 / 3.0) if diffs else 1.0
            else:
                previous = [sq(G[i][j]) for i in range(1, t)]  # a_t from g_1..g_{t-1}
                s_a = _accumulate(previous, ema, betas[0], bias_correction) if previous else None
                a_t = (1 + s_a / a0) ** (-2.0 / 3.0) if previous else 1.0
            d = G[t][j] if t == 1 else G[t][j] + (1 - a_t) * (D[t - 1][j] - C[t][j])
            D[t].append(d)
            if rule == "general":
                a_for_b = a_t
            else:
                upto = [sq(G[i][j]) for i in range(1, t + 1)]  # a_{t+1}
                a_for_b = (1 + _accumulate(upto, ema, betas[0], bias_correction) / a0) ** (-2.0 / 3.0)
            A[(t + 1, j)] = a_for_b
            if rule == "storm_plus":
                terms = [sq(D[i][j]) / A[(i + 1, j)] for i in range(1, t + 1)]
                b = (b0 + _accumulate(terms, ema, betas[1], bias_correction)) ** (1.0 / 3.0)
            else:
                terms = [sq(D[i][j]) for i in range(1, t + 1)]
                b = (b0 + _accumulate(terms, ema, betas[1], bias_correction)) ** p / a_for_b**q
            new_x.append(X[t][j] - lr * d / b)
        X[t + 1] = new_x
    return [X[t] for t in range(2, len(samples) + 2)]
