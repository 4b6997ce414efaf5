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

The partition is decided from the parameter's global shape. On a parameter sharded on dim 0 (FSDP2):

* one accumulator per row (heuristics on a tall matrix, or per coordinate of a 1-d tensor): the
  accumulators are row-sharded like the parameter and every rank updates its own, with no communication;
* one accumulator per column (heuristics on a wide matrix): each rank sums its rows, and one all-reduce
  of ``n`` floats per step combines the column sums into the replicated ``(1, n)`` accumulators;
* contiguous subsets of ``k'`` elements (integer ``subset_size``), which may cross a shard boundary: each
  rank sums the parts of the subsets it holds, and one all-reduce of ``numel / k'`` floats per step
  combines them into the replicated accumulators.
"""

from __future__ import annotations

import math

import torch

from memopt.estimators.base import ParamStep, SecondMomentEstimator
from memopt.estimators.registry import register_estimator
from memopt.estimators.second_moment import accumulate, check_accumulation, denominator
from memopt.state import sharding
from memopt.state.template import StateSlot
from memopt.validation import name_list

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


def _rows(x: torch.Tensor, b: int) -> int:
    """Rows of ``x`` viewed with ``b`` columns (the local rows of a sharded parameter's partition view)."""
    return x.numel() // b if b else 0


@register_estimator("subset_norm")
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

    def check_param(self, param: torch.Tensor, group: dict, name: str) -> str | None:
        size = group["subset_size"]
        if isinstance(size, int) and size > param.numel() > 0:
            return f"{name} clamped to {param.numel()}"
        return None

    def adjustment_warning(self, group: dict, notes: list[str]) -> str:
        return (
            f"subset_size={group['subset_size']} is larger than {len(notes)} parameter(s), so each of them is one "
            f"subset (AdaGrad-Norm over the whole tensor): {name_list(notes)}."
        )

    @staticmethod
    def _partition(shape: tuple[int, ...], group: dict) -> tuple[tuple[int, int], int]:
        return subset_partition(tuple(shape), group["subset_size"])

    @staticmethod
    def _row_aligned(shape: tuple[int, ...], group: dict) -> bool:
        """Whether every accumulator belongs to one dim-0 index (so it is row-sharded with the parameter)."""
        return group["subset_size"] == HEURISTICS and subset_partition(tuple(shape), HEURISTICS)[1] == 1

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """One accumulator per subset, ``(a, 1)`` or ``(1, b)``; row-sharded when each belongs to a row."""
        (a, b), reduce_dim = self._partition(param.shape, group)
        shape = (a, 1) if reduce_dim == 1 else (1, b)
        return {"subset_sq": StateSlot("reduced", shape, sharded=self._row_aligned(param.shape, group))}

    def _chunked(self, ps: ParamStep, group: dict) -> bool:
        """Contiguous subsets of a sharded parameter: a subset may continue on the next rank."""
        return ps.shard.sharded and not self._row_aligned(ps.shape, group) and self._partition(ps.shape, group)[1] == 1

    def _statistic(self, ps: ParamStep, group: dict, *, fast: bool) -> torch.Tensor:
        """This step's subset sums of squared gradients for the accumulators this rank keeps."""
        (a, b), reduce_dim = self._partition(ps.shape, group)
        spec = ps.shard
        if self._chunked(ps, group):
            first, chunks = sharding.flat_blocks(ps.grad.reshape(-1), b, spec.flat_start)
            stat = chunks.new_zeros((a, 1))
            stat[first : first + chunks.shape[0]] = (chunks * chunks).sum(dim=1, keepdim=True)
            return spec.all_reduce(stat)
        g = ps.grad.reshape(_rows(ps.grad, b), b)  # (a, b), or this rank's rows of it
        if reduce_dim == 1:
            if fast:  # a row norm reads g once (the fastest CPU reduction measured, see docs/benchmarks.md)
                return torch.linalg.vector_norm(g, dim=1, keepdim=True).square_()
            return (g * g).sum(dim=1, keepdim=True)
        if fast:  # column sums of squares as a matrix-vector product (a strided norm over dim 0 is ~6x slower)
            stat = torch.mv((g * g).T, torch.ones(g.shape[0], dtype=g.dtype, device=g.device)).unsqueeze(0)
        else:
            stat = (g * g).sum(dim=0, keepdim=True)
        return spec.all_reduce(stat)  # column sums over rows that other ranks hold too

    def update(self, ps: ParamStep, group: dict) -> None:
        acc = ps.load("subset_sq", ps.grad.dtype)
        accumulate(acc, self._statistic(ps, group, fast=False), group["betas"][1])
        ps.store("subset_sq", acc)

    def _elementwise_denominator(self, denom: torch.Tensor, ps: ParamStep, group: dict) -> torch.Tensor:
        """A chunked parameter's denominators spread over its local elements (flat)."""
        b = self._partition(ps.shape, group)[0][1]
        n, start = ps.grad.numel(), ps.shard.flat_start
        window = sharding.blocks_overlapped(start, n, b)
        return sharding.unblock(denom[window].expand(window.stop - window.start, b), start, n)

    def precondition(self, numerator: torch.Tensor, ps: ParamStep, group: dict) -> torch.Tensor:
        b = self._partition(ps.shape, group)[0][1]
        denom = denominator(ps.load("subset_sq", numerator.dtype), group, ps.step)
        if self._chunked(ps, group):
            return (numerator.reshape(-1) / self._elementwise_denominator(denom, ps, group)).reshape(numerator.shape)
        return (numerator.reshape(_rows(numerator, b), b) / denom).reshape(numerator.shape)

    def update_many(self, steps: list[ParamStep], group: dict) -> None:
        beta2 = group["betas"][1]
        for ps in steps:
            accumulate(ps.state["subset_sq"], self._statistic(ps, group, fast=True), beta2)

    def apply_many(self, steps, numerators, step_sizes, group) -> None:
        for ps, num, step_size in zip(steps, numerators, step_sizes):
            denom = denominator(ps.state["subset_sq"], group, ps.step)
            if self._chunked(ps, group):
                denom = self._elementwise_denominator(denom, ps, group)
                ps.work.view(-1).addcdiv_(num.reshape(-1), denom, value=-step_size)
            else:
                b = self._partition(ps.shape, group)[0][1]
                rows = _rows(num, b)
                ps.work.view(rows, b).addcdiv_(num.reshape(rows, b), denom, value=-step_size)
