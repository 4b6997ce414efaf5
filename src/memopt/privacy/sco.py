r"""Private stochastic convex optimization by one-pass mini-batch SGD through a private sum.

Cheu, Joseph, Mao & Peng (ICLR 2022, arXiv 2106.09805; abstract) build their shuffle-private SCO protocols by
combining the vector-sum subroutine with mini-batch SGD, accelerated gradient descent and Nesterov smoothing.
Their algorithms and step sizes were not available to us; this is the simplest instance [our choice]:

* split the ``n`` users into ``T = floor(n / m)`` disjoint batches of ``m``;
* round ``t``: broadcast ``theta_t``; each user of batch ``t`` computes its gradient ``grad l(theta_t; x)``,
  clipped to ``l2`` norm ``B``; the aggregator (shuffle protocol or a baseline,
  :mod:`memopt.privacy.baselines`) returns an estimate ``G_t`` of the batch's sum;
* ``theta_{t+1} = Proj_{||theta|| <= R}(theta_t - lr G_t / m)``; the output is the average of
  ``theta_1..theta_T`` (Bubeck 2015, Theorem 6.1).

Each user takes part in one round only, and the other rounds see its data only through ``theta``, so the
whole run has the privacy of one round's aggregator (parallel composition with post-processing).
[derived] With an unbiased aggregator of per-coordinate noise variance ``V``, the stochastic gradient has
variance at most ``B^2/m + d V/m^2``, which is what places the shuffle curve between the central one (``V``
independent of ``m``) and the local one (``V`` proportional to ``m``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from memopt.privacy.summation import clip_rows


@dataclass
class SCOResult:
    """Averaged output ``theta``, the last iterate and the number of rounds."""

    theta: torch.Tensor
    last: torch.Tensor
    rounds: int


def private_sgd(
    per_user_grads: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    users: int,
    dim: int,
    batch: int,
    lr: float,
    aggregator: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor],
    bound: float,
    radius: float,
    generator: torch.Generator | None = None,
) -> SCOResult:
    """One pass of mini-batch SGD over ``users`` users through ``aggregator``.

    ``per_user_grads(theta, index)`` returns the ``(len(index), dim)`` gradients of the users ``index`` at
    ``theta``; users are visited in a random order drawn from ``generator``.
    """
    if not 1 <= batch <= users:
        raise ValueError(f"batch must be in [1, users={users}], got {batch}.")
    if not lr > 0 or not radius > 0 or not bound > 0:
        raise ValueError(f"lr, radius and bound must be > 0, got lr={lr}, radius={radius}, bound={bound}.")
    order = torch.randperm(users, generator=generator)
    rounds = users // batch
    theta = torch.zeros(dim, dtype=torch.float64)
    total = torch.zeros_like(theta)
    for t in range(rounds):
        index = order[t * batch : (t + 1) * batch]
        grads = clip_rows(per_user_grads(theta, index), bound)
        estimate = aggregator(grads, generator)
        theta = theta - lr * estimate / batch
        norm = theta.norm()
        if norm > radius:
            theta = theta * (radius / norm)
        total += theta
    return SCOResult(total / rounds, theta, rounds)
