"""The Subset-Norm / Subspace-Momentum authors' conventions (timmytonga/sn-sm), paper-literal, for one 2-D tensor.

Written from ``ALGORITHMS-memory.md`` sections 0.2, 1.5, 2.4 and 2.5 (the description of the authors'
``GenericOptim``), and from GaLore's projector schedule (its counter starts at 0 and rebuilds when
``iter % gap == 0``: steps 1, gap + 1, 2 gap + 1, ...). Per step ``t = 1, 2, ...``::

    rebuild P from g_t when the schedule says so; at t > 1 the momentum restarts from zero
    M   <- beta1 M + (1 - beta1) P(g)              (plain EMA of g without a projector)
    N    = P*(M) + (g - P*(P(g)))
    V_i <- beta2 V_i + (1 - beta2) sum_{j in i} g_j^2          (V_i + sum with beta2 = 1)
    D    = sqrt(V) + eps                             eps added BEFORE the bias correction
    eta_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)     HF-style step-size correction (1 when off)
    theta <- theta - eta_t N / D
    theta <- theta - lr wd theta                     decoupled decay AFTER the update, base lr

The authors' momentum restart differs: their code replaces the state entry with zeros but keeps updating the
old buffer for the rebuild step itself (the zeros take effect one step later). That is a defect, and neither
this reference nor memopt reproduces it: here the momentum is zero before the rebuild step's EMA.
This module must never import ``memopt``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tests.reference.naive import _spread, _subset_square_sums, build_projector, subset_partition
from torch import Tensor


def rebuilds(t: int, gap: int, schedule: str) -> bool:
    """sn-sm: ``t == 1 or t % gap == 0``; GaLore: ``(t - 1) % gap == 0``."""
    return (t - 1) % gap == 0 if schedule == "galore" else (t == 1 or t % gap == 0)


def authors_run(
    theta0: Tensor,
    grads: Sequence[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    bias_correction: bool,
    subset_size: int | str,
    rank: int | None = None,
    update_proj_gap: int = 200,
    schedule: str = "sn-sm",
) -> tuple[list[Tensor], list[int]]:
    """The parameter after each step, and the steps at which the projector was (re)built."""
    beta1, beta2 = betas
    layout, _ = subset_partition(theta0.shape, subset_size)
    subsets = layout.subsets()
    theta = theta0.clone()
    v = torch.zeros(layout.acc_shape, dtype=theta0.dtype)
    m = torch.zeros_like(theta0)
    projector = None
    params, rebuilt = [], []
    for t, g in enumerate(grads, start=1):
        if rank is None:
            m = beta1 * m + (1 - beta1) * g
            numerator = m
        else:
            if rebuilds(t, update_proj_gap, schedule):
                projector = build_projector("svd", g, rank, t=t)
                m = torch.zeros_like(projector.project(g))
                rebuilt.append(t)
            projected = projector.project(g)
            m = beta1 * m + (1 - beta1) * projected
            numerator = projector.back_project(m) + (g - projector.back_project(projected))
        v = v + _subset_square_sums(g, subsets, layout.acc_shape) if beta2 == 1 else (
            beta2 * v + (1 - beta2) * _subset_square_sums(g, subsets, layout.acc_shape)
        )
        denominator = torch.sqrt(v) + eps
        step_size = lr
        if bias_correction:
            step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        theta = theta - step_size * numerator / _spread(denominator, subsets, tuple(theta.shape))
        theta = theta - lr * weight_decay * theta
        params.append(theta)
    return params, rebuilt
