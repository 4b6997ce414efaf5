"""Subset-Norm (SN) step sizes: one second-moment accumulator per subset of coordinates.

Nguyen & Nguyen, "Lean and Mean Adaptive Optimization via Subset-Norm and Subspace-Momentum with
Convergence Guarantees", ICML 2025 (arXiv 2411.07120).

The coordinates of a parameter are partitioned into subsets ``Psi_1..Psi_K``. Each subset keeps one
accumulator fed by the *sum* of the squared gradient over the subset, ``S_{t,i} = sum_{j in Psi_i} g_{t,j}^2``,
and every coordinate of the subset is divided by the same denominator ``D_{t,i}`` (accumulation and
denominator as in :mod:`.second_moment`)::

    theta_j <- theta_j - lr_t * N_{t,j} / D_{t, psi(j)}

Partitions (``subset_size``), each a view ``(a, b)`` of the parameter summed over one dimension:

* ``"heuristics"`` (the paper's rule for 2-D weights): subsets run along the shorter side, so a tall
  ``m x n`` (``m >= n``) matrix keeps one accumulator per row, shape ``(m, 1)``, and a wide one one per
  column, shape ``(1, n)``. Tensors of 3 or more dimensions are viewed as ``(shape[0], rest)``; 0-d and
  1-d tensors are coordinate-wise (subsets of size 1).
* a positive ``k``: contiguous chunks (row-major order) of ``k'`` elements, ``k'`` the largest divisor of
  ``numel`` that is ``<= k`` (a ``k`` above ``numel`` is clamped to ``numel``, which is AdaGrad-Norm).
* a negative ``-c``: ``k = max(1, floor(sqrt(numel) / c))`` then the divisor rule (``-2`` gives ``d/2``
  on a ``d x d`` matrix).
"""

from __future__ import annotations

import math
import warnings

import torch

from memopt.components import storage
from memopt.components.base import ParamStep, SecondMomentEstimator
from memopt.components.second_moment import accumulate, check_accumulation, denominator

HEURISTICS = "heuristics"


def largest_divisor_at_most(n: int, k: int) -> int:
    """The largest divisor of ``n`` that is ``<= k`` (``1 <= k``; ``k >= n`` gives ``n``)."""
    k = min(k, n)
    while n % k:
        k -= 1
    return k


def subset_partition(shape: tuple[int, ...], subset_size: int | str) -> tuple[tuple[int, int], int]:
    """The partition of a tensor of ``shape`` as ``((a, b), reduce_dim)``.

    The gradient viewed as ``(a, b)`` and summed over ``reduce_dim`` (keeping the dimension) gives the
    subset statistics; the accumulator has shape ``(a, 1)`` (``reduce_dim = 1``) or ``(1, b)``.
    """
    numel = math.prod(shape)
    if subset_size == HEURISTICS:
        if len(shape) < 2:
            return (numel, 1), 1
        rows, cols = shape[0], numel // shape[0] if shape[0] else 0
        return ((rows, cols), 1) if rows >= cols else ((rows, cols), 0)
    if numel == 0:
        return (0, 1), 1
    if subset_size < 0:
        target = max(1, math.isqrt(numel) // -subset_size)
    else:
        target = subset_size
    k = largest_divisor_at_most(numel, target)
    return (numel // k, k), 1


def effective_subset_size(shape: tuple[int, ...], subset_size: int | str) -> int:
    """How many coordinates share one accumulator under ``subset_size`` for a tensor of ``shape``."""
    (a, b), reduce_dim = subset_partition(shape, subset_size)
    return b if reduce_dim == 1 else a


class SubsetNormSecondMoment(SecondMomentEstimator):
    """Subset-Norm accumulators (see the module docstring); hyperparameter ``subset_size``."""

    hyperparameters = {"subset_size": HEURISTICS}

    def validate_group(self, group: dict) -> None:
        check_accumulation(group)
        size = group["subset_size"]
        valid = size == HEURISTICS or (isinstance(size, int) and not isinstance(size, bool) and size != 0)
        if not valid:
            raise ValueError(
                f"Invalid subset_size: {size!r}. Use 'heuristics' (one accumulator per row or column of a "
                "matrix), a positive subset size k, a negative -c for subsets of sqrt(numel)/c, or None for "
                "coordinate-wise accumulators."
            )

    def check_param(self, param: torch.Tensor, group: dict, name: str) -> None:
        size = group["subset_size"]
        if isinstance(size, int) and size > param.numel() > 0:
            warnings.warn(
                f"subset_size={size} is larger than {name} ({param.numel()} elements); it is clamped to "
                f"{param.numel()}, one subset for the whole tensor (AdaGrad-Norm).",
                stacklevel=4,
            )

    @staticmethod
    def _partition(param: torch.Tensor, group: dict) -> tuple[tuple[int, int], int]:
        return subset_partition(tuple(param.shape), group["subset_size"])

    def init_state(self, param: torch.Tensor, state: dict, group: dict) -> None:
        (a, b), reduce_dim = self._partition(param, group)
        state["subset_sq"] = storage.zeros_reduced(param, (a, 1) if reduce_dim == 1 else (1, b))

    def state_shapes(self, param, state, group):
        (a, b), reduce_dim = self._partition(param, group)
        return {"subset_sq": (a, 1) if reduce_dim == 1 else (1, b)}

    def update(self, ps: ParamStep, group: dict) -> None:
        view, reduce_dim = self._partition(ps.param, group)
        g = ps.grad.reshape(view)
        acc = ps.load("subset_sq", g.dtype)
        accumulate(acc, (g * g).sum(dim=reduce_dim, keepdim=True), group["betas"][1])
        ps.store("subset_sq", acc)

    def precondition(self, numerator: torch.Tensor, ps: ParamStep, group: dict) -> torch.Tensor:
        view, _ = self._partition(ps.param, group)
        acc = ps.load("subset_sq", numerator.dtype)
        return (numerator.reshape(view) / denominator(acc, group, ps.step)).reshape(numerator.shape)

    def update_many(self, steps: list[ParamStep], group: dict) -> None:
        beta2 = group["betas"][1]
        for ps in steps:
            view, reduce_dim = self._partition(ps.param, group)
            g = ps.grad.reshape(view)
            # The fastest CPU reductions measured (see docs/benchmarks.md): a row norm reads g once; column
            # sums of squares go through a matrix-vector product (a strided norm over dim 0 is ~6x slower).
            if reduce_dim == 1:
                stat = torch.linalg.vector_norm(g, dim=1, keepdim=True).square_()
            else:
                ones = torch.ones(g.shape[0], dtype=g.dtype, device=g.device)
                stat = torch.mv((g * g).T, ones).unsqueeze(0)
            accumulate(ps.state["subset_sq"], stat, beta2)

    def apply_many(self, steps, numerators, step_sizes, group) -> None:
        for ps, num, step_size in zip(steps, numerators, step_sizes):
            view, _ = self._partition(ps.param, group)
            denom = denominator(ps.state["subset_sq"], group, ps.step)
            ps.work.view(view).addcdiv_(num.reshape(view), denom, value=-step_size)
