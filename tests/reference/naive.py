"""Naive, paper-literal reference optimizers (Subset-Norm, Subspace-Momentum, AdaGrad, AdaGrad-Norm).

Written straight from ``ALGORITHMS-memory.md`` sections 0-3 and deliberately slow and plain: one tensor at a
time, an explicit loop over steps (and over subsets where that reads better), no in-place updates, no foreach,
no fusion. This module must never import ``memopt``.

Every ``*_run`` function simulates a whole run: it takes the initial parameter and a list of gradients (one
per step, fixed in advance, i.e. independent of the parameter) and returns ``(params, state)`` where
``params[i]`` is the parameter after step ``i + 1`` and ``state`` is the optimizer state after the last step.
Pass float64 tensors for reference-quality numbers; the computation runs in the dtype of ``theta0``
(SVDs run in float64).

memopt conventions followed here (some differ from the sn-sm source, on purpose):

1. The step counter ``t`` is 1 on the first step.
2. Decoupled weight decay is applied *before* the update, torch.optim.AdamW style, with the base lr:
   ``theta <- theta * (1 - lr * weight_decay)``.
3. Bias correction (when on) is PyTorch-style: ``bc1 = 1 - beta1**t``, ``bc2 = 1 - beta2**t`` and
   ``theta <- theta - lr / bc1 * N / (sqrt(V / bc2) + eps)`` (eps added after correcting the root).
   Off: ``theta <- theta - lr * N / (sqrt(V) + eps)``. ``bc1`` applies only with EMA momentum (``beta1 > 0``),
   ``bc2`` only with an EMA accumulator (``beta2 < 1``); otherwise the factor is 1.
4. Second moment: ``beta2 < 1``: ``V <- beta2 * V + (1 - beta2) * S``; ``beta2 == 1``: ``V <- V + S``
   (AdaGrad). ``S`` is the SUM of squared gradient entries over a subset.
5. Momentum: ``M <- beta1 * M + (1 - beta1) * g``; ``beta1 == 0`` means no momentum, ``N = g``.
"""

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Tensor = torch.Tensor
SubsetSize = int | str | None

PROJ_TYPES = ("svd", "topk", "uniform", "randomized")
MOMENTUM_POLICIES = ("reset", "keep", "transform")


# ---------------------------------------------------------------------------------------------------------
# Shared small helpers
# ---------------------------------------------------------------------------------------------------------


def _check_common(lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"beta1 must be in [0, 1), got {beta1}")
    if not 0.0 <= beta2 <= 1.0:
        raise ValueError(f"beta2 must be in [0, 1], got {beta2}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


def _check_grads(theta0: Tensor, grads: Sequence[Tensor]) -> None:
    for i, g in enumerate(grads):
        if g.shape != theta0.shape:
            raise ValueError(f"grads[{i}] has shape {tuple(g.shape)}, parameter has {tuple(theta0.shape)}")


def _decoupled_decay(theta: Tensor, lr: float, weight_decay: float) -> Tensor:
    """AdamW-style decay, applied before the update: theta * (1 - lr * wd)."""
    if weight_decay == 0:
        return theta
    return theta * (1.0 - lr * weight_decay)


def _ema_or_sum(v: Tensor, s: Tensor, beta2: float) -> Tensor:
    """beta2 < 1: v <- beta2 v + (1 - beta2) s;  beta2 == 1: v <- v + s."""
    if beta2 == 1.0:
        return v + s
    return beta2 * v + (1.0 - beta2) * s


def _bias_corrections(t: int, beta1: float, beta2: float, bias_correction: bool) -> tuple[float, float]:
    """(bc1, bc2); each is 1.0 when correction is off or does not apply to that buffer."""
    bc1 = 1.0 - beta1**t if (bias_correction and beta1 > 0) else 1.0
    bc2 = 1.0 - beta2**t if (bias_correction and beta2 < 1) else 1.0
    return bc1, bc2


# ---------------------------------------------------------------------------------------------------------
# Subset partition (ALGORITHMS-memory.md section 1.3)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubsetLayout:
    """How the coordinates of one tensor are grouped into Subset-Norm subsets.

    The parameter is flattened in row-major order and viewed as a matrix of shape ``matrix_shape``.

    * ``kind == "coordinate"``: every entry is its own subset; the accumulator has the parameter's shape.
    * ``kind == "rows"``: each row of the matrix view is one subset; accumulator shape ``(rows, 1)``.
    * ``kind == "columns"``: each column of the matrix view is one subset; accumulator shape ``(1, cols)``.

    Accumulator entry ``i`` (in row-major order of ``acc_shape``) belongs to ``subsets()[i]``.
    """

    kind: str
    param_shape: tuple[int, ...]
    matrix_shape: tuple[int, int]
    acc_shape: tuple[int, ...]

    @property
    def num_subsets(self) -> int:
        return math.prod(self.acc_shape)

    def subsets(self) -> list[Tensor]:
        """Flat (row-major) parameter indices of every subset, in accumulator order."""
        rows, cols = self.matrix_shape
        if self.kind == "coordinate":
            return [torch.tensor([j]) for j in range(rows * cols)]
        if self.kind == "rows":
            return [torch.tensor([i * cols + j for j in range(cols)]) for i in range(rows)]
        if self.kind == "columns":
            return [torch.tensor([i * cols + j for i in range(rows)]) for j in range(cols)]
        raise ValueError(f"unknown layout kind {self.kind!r}")


def largest_divisor_at_most(n: int, k: int) -> int:
    """The largest divisor of ``n`` that is <= ``k`` (``k > n`` is clamped to ``n``)."""
    if n < 1 or k < 1:
        raise ValueError(f"need n >= 1 and k >= 1, got n={n}, k={k}")
    for d in range(min(k, n), 0, -1):
        if n % d == 0:
            return d
    raise AssertionError("unreachable: 1 divides every n")


def subset_partition(shape: Sequence[int], subset_size: SubsetSize) -> tuple[SubsetLayout, int]:
    """Subsets for a tensor of ``shape``; returns ``(layout, k_eff)`` with ``k_eff`` the subset size.

    * ``None``: coordinate-wise (subset size 1, accumulator of the parameter's shape).
    * ``"heuristics"``: ndim 0/1: coordinate-wise. ndim 2 (m, n): tall m >= n -> one subset per row
      (accumulator (m, 1), k_eff = n); wide m < n -> one per column ((1, n), k_eff = m). ndim >= 3: the same
      rule on the reshaped (shape[0], prod(shape[1:])) matrix.
    * ``k > 0``: k_eff = largest divisor of N = numel that is <= k (k > N clamped to N); subsets are
      contiguous flat chunks of k_eff entries: rows of the (N / k_eff, k_eff) view, accumulator
      (N / k_eff, 1).
    * ``-c < 0``: target = max(1, floor(sqrt(N) / c)), then the divisor rule.
    """
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    if n < 1:
        raise ValueError(f"empty tensor shape {shape}")

    if subset_size is None:
        return SubsetLayout("coordinate", shape, (n, 1), shape), 1

    if isinstance(subset_size, str):
        if subset_size != "heuristics":
            raise ValueError(f"unknown subset_size {subset_size!r}")
        if len(shape) <= 1:
            return SubsetLayout("coordinate", shape, (n, 1), shape), 1
        rows = shape[0]
        cols = n // rows
        if rows >= cols:  # tall (ties count as tall): sum each row over its columns
            return SubsetLayout("rows", shape, (rows, cols), (rows, 1)), cols
        return SubsetLayout("columns", shape, (rows, cols), (1, cols)), rows  # wide: sum each column

    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size == 0:
        raise ValueError(f"subset_size must be None, 'heuristics' or a non-zero int, got {subset_size!r}")
    if subset_size > 0:
        target = subset_size
    else:
        c = -subset_size
        # floor(sqrt(N) / c) == floor(isqrt(N) / c) for integer c, computed exactly.
        target = max(1, math.isqrt(n) // c)
    k = largest_divisor_at_most(n, target)
    return SubsetLayout("rows", shape, (n // k, k), (n // k, 1)), k


def _subset_square_sums(g: Tensor, subsets: list[Tensor], acc_shape: tuple[int, ...]) -> Tensor:
    """S_i = sum over subset i of g_j**2, arranged in ``acc_shape``."""
    flat = g.reshape(-1)
    sums = [(flat[idx] ** 2).sum() for idx in subsets]
    return torch.stack(sums).reshape(acc_shape)


def _spread(values: Tensor, subsets: list[Tensor], shape: tuple[int, ...]) -> Tensor:
    """Full tensor of ``shape`` whose entry j holds the value of the subset that contains j."""
    flat_values = values.reshape(-1)
    out = torch.empty(math.prod(shape), dtype=values.dtype)
    for i, idx in enumerate(subsets):
        out[idx] = flat_values[i]
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------------------------
# Subset-Norm (section 1) and coordinate-wise Adam
# ---------------------------------------------------------------------------------------------------------


def subset_norm_run(
    theta0: Tensor,
    grads: Sequence[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction: bool,
    subset_size: SubsetSize,
) -> tuple[list[Tensor], dict]:
    """Adam-SN / RMSProp-SN / AdaGrad-SN: EMA momentum numerator over a Subset-Norm denominator.

    Per step t = 1, 2, ...::

        theta <- theta * (1 - lr * wd)
        N      = M <- beta1 M + (1 - beta1) g          (N = g if beta1 == 0)
        S_i    = sum_{j in subset i} g_j^2
        V_i   <- beta2 V_i + (1 - beta2) S_i           (V_i <- V_i + S_i if beta2 == 1)
        theta_j <- theta_j - lr / bc1 * N_j / (sqrt(V_psi(j) / bc2) + eps)

    State keys: ``step`` (int), ``exp_avg`` (param shape; only if beta1 > 0),
    ``exp_avg_sq`` (``layout.acc_shape``).
    """
    _check_common(lr, beta1, beta2, eps, weight_decay)
    _check_grads(theta0, grads)
    layout, _ = subset_partition(theta0.shape, subset_size)
    subsets = layout.subsets()

    theta = theta0.clone()
    m = torch.zeros_like(theta0)
    v = torch.zeros(layout.acc_shape, dtype=theta0.dtype)
    params = []
    for t, g in enumerate(grads, start=1):
        theta = _decoupled_decay(theta, lr, weight_decay)
        if beta1 > 0:
            m = beta1 * m + (1.0 - beta1) * g
            numerator = m
        else:
            numerator = g
        v = _ema_or_sum(v, _subset_square_sums(g, subsets, layout.acc_shape), beta2)
        bc1, bc2 = _bias_corrections(t, beta1, beta2, bias_correction)
        denom = torch.sqrt(v / bc2) + eps  # one value per subset
        theta = theta - (lr / bc1) * numerator / _spread(denom, subsets, tuple(theta.shape))
        params.append(theta)

    state: dict = {"step": len(grads), "exp_avg_sq": v}
    if beta1 > 0:
        state["exp_avg"] = m
    return params, state


def adam_run(
    theta0: Tensor,
    grads: Sequence[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    bias_correction: bool = True,
) -> tuple[list[Tensor], dict]:
    """Coordinate-wise Adam/AdamW (decoupled decay before the step), same conventions as Subset-Norm.

    Per step::

        theta <- theta * (1 - lr * wd)
        N = M <- beta1 M + (1 - beta1) g               (N = g if beta1 == 0)
        V <- beta2 V + (1 - beta2) g^2                 (V <- V + g^2 if beta2 == 1)
        theta <- theta - lr / bc1 * N / (sqrt(V / bc2) + eps)

    With bias correction on, beta1 > 0 and beta2 < 1 this is torch.optim.AdamW.
    State keys: ``step``, ``exp_avg`` (only if beta1 > 0), ``exp_avg_sq``.
    """
    _check_common(lr, beta1, beta2, eps, weight_decay)
    _check_grads(theta0, grads)
    theta = theta0.clone()
    m = torch.zeros_like(theta0)
    v = torch.zeros_like(theta0)
    params = []
    for t, g in enumerate(grads, start=1):
        theta = _decoupled_decay(theta, lr, weight_decay)
        if beta1 > 0:
            m = beta1 * m + (1.0 - beta1) * g
            numerator = m
        else:
            numerator = g
        v = _ema_or_sum(v, g * g, beta2)
        bc1, bc2 = _bias_corrections(t, beta1, beta2, bias_correction)
        theta = theta - (lr / bc1) * numerator / (torch.sqrt(v / bc2) + eps)
        params.append(theta)

    state: dict = {"step": len(grads), "exp_avg_sq": v}
    if beta1 > 0:
        state["exp_avg"] = m
    return params, state


# ---------------------------------------------------------------------------------------------------------
# AdaGrad and AdaGrad-Norm (section 3)
# ---------------------------------------------------------------------------------------------------------


def adagrad_run(
    theta0: Tensor,
    grads: Sequence[Tensor],
    *,
    lr: float,
    eps: float,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
) -> tuple[list[Tensor], dict]:
    """Diagonal AdaGrad with torch.optim.Adagrad semantics (lr_decay = 0, coupled L2 decay).

    Per step::

        g <- g + wd * theta
        S <- S + g^2                                   (S_0 = initial_accumulator_value)
        theta <- theta - lr * g / (sqrt(S) + eps)

    State keys: ``step``, ``sum``.
    """
    _check_grads(theta0, grads)
    theta = theta0.clone()
    s = torch.full_like(theta0, float(initial_accumulator_value))
    params = []
    for g in grads:
        if weight_decay != 0:
            g = g + weight_decay * theta
        s = s + g * g
        theta = theta - lr * g / (torch.sqrt(s) + eps)
        params.append(theta)
    return params, {"step": len(grads), "sum": s}


def adagrad_norm_run(
    theta0: Tensor,
    grads: Sequence[Tensor],
    *,
    lr: float,
    eps: float,
    b0_sq: float = 0.0,
) -> tuple[list[Tensor], dict]:
    """Per-tensor AdaGrad-Norm: one scalar step size for the whole tensor.

    Per step::

        b^2 <- b^2 + ||g||_2^2                         (b^2_0 = b0_sq)
        theta <- theta - lr * g / (sqrt(b^2) + eps)

    State keys: ``step``, ``b_sq`` (0-d tensor, = b0_sq + sum_{s<=t} ||g_s||^2).
    """
    _check_grads(theta0, grads)
    theta = theta0.clone()
    b_sq = torch.tensor(float(b0_sq), dtype=theta0.dtype)
    params = []
    for g in grads:
        b_sq = b_sq + (g * g).sum()
        theta = theta - lr * g / (torch.sqrt(b_sq) + eps)
        params.append(theta)
    return params, {"step": len(grads), "b_sq": b_sq}


def adagrad_norm_global_run(
    thetas0: list[Tensor],
    grads: list[list[Tensor]],
    *,
    lr: float,
    eps: float,
    b0_sq: float = 0.0,
) -> tuple[list[list[Tensor]], dict]:
    """Global AdaGrad-Norm: one scalar step size shared by all tensors.

    ``grads[t][i]`` is the gradient of tensor ``i`` at step ``t + 1`` (outer list over steps).
    Per step::

        b^2 <- b^2 + sum_i ||g_i||_2^2
        theta_i <- theta_i - lr * g_i / (sqrt(b^2) + eps)   for every i

    Returns ``(params, state)`` with ``params[t][i]`` tensor ``i`` after step ``t + 1``;
    state keys: ``step``, ``b_sq`` (0-d tensor in the dtype of ``thetas0[0]``).
    """
    for step_grads in grads:
        if len(step_grads) != len(thetas0):
            raise ValueError("every step needs one gradient per parameter tensor")
        for theta0, g in zip(thetas0, step_grads, strict=True):
            _check_grads(theta0, [g])
    thetas = [th.clone() for th in thetas0]
    b_sq = torch.tensor(float(b0_sq), dtype=thetas0[0].dtype)
    params = []
    for step_grads in grads:
        for g in step_grads:  # the whole sum is formed before any tensor moves
            b_sq = b_sq + (g * g).sum()
        thetas = [th - lr * g / (torch.sqrt(b_sq) + eps) for th, g in zip(thetas, step_grads, strict=True)]
        params.append(thetas)
    return params, {"step": len(grads), "b_sq": b_sq}


# ---------------------------------------------------------------------------------------------------------
# Subspace momentum (section 2)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Projector:
    """The pair (P, P*) of one refresh, for a 2-D parameter of shape ``shape`` = (m, n).

    * ``side == "right"`` (svd/randomized, tall m >= n): basis B (r x n, orthonormal rows);
      P(G) = G B^T (m x r), P*(X) = X B.
    * ``side == "left"`` (svd/randomized, wide m < n): basis A (m x r, orthonormal columns);
      P(G) = A^T G (r x n), P*(X) = A X.
    * ``side == "rows"`` (topk/uniform, tall): P(G) = G[idx, :] (r x n); P* writes row k of X into row
      idx[k] of an m x n zero matrix.
    * ``side == "columns"`` (topk/uniform, wide): the same with columns: P(G) = G[:, idx] (m x r).
    """

    side: str
    shape: tuple[int, int]
    basis: Tensor | None = None
    indices: Tensor | None = None

    def project(self, g: Tensor) -> Tensor:
        if self.side == "right":
            return g @ self.basis.T
        if self.side == "left":
            return self.basis.T @ g
        if self.side == "rows":
            return g[self.indices, :]
        if self.side == "columns":
            return g[:, self.indices]
        raise ValueError(f"unknown side {self.side!r}")

    def back_project(self, x: Tensor) -> Tensor:
        if self.side == "right":
            return x @ self.basis
        if self.side == "left":
            return self.basis @ x
        out = torch.zeros(self.shape, dtype=x.dtype)
        if self.side == "rows":
            out[self.indices, :] = x
        elif self.side == "columns":
            out[:, self.indices] = x
        else:
            raise ValueError(f"unknown side {self.side!r}")
        return out


def _clamp_rank(rank: int, limit: int, proj_type: str) -> int:
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if rank > limit:
        warnings.warn(f"{proj_type}: rank {rank} clamped to {limit}", stacklevel=3)
        return limit
    return rank


def _randomized_basis(g: Tensor, rank: int, generator: torch.Generator | None) -> Tensor:
    """Textbook randomized range finder (Gaussian sketch, QR, small SVD) for the shorter side of ``g``.

    Tall: returns B (rank x n) spanning approximately the top right singular vectors.
    Wide: returns A (m x rank) spanning approximately the top left singular vectors.
    The sketch has min(min(m, n), 2 * rank) columns. Computed in float64.
    """
    g64 = g.to(torch.float64)
    m, n = g64.shape
    k = min(min(m, n), 2 * rank)
    if m >= n:
        omega = torch.randn(m, k, dtype=torch.float64, generator=generator)
        q, _ = torch.linalg.qr(g64.T @ omega)  # n x k, orthonormal columns, ~ row space of g
        _, _, wh = torch.linalg.svd(g64 @ q, full_matrices=False)  # (m x k) = U S W^T, wh = W^T
        return (wh[:rank, :] @ q.T).to(g.dtype)  # rank x n: top rows of (Q W)^T
    omega = torch.randn(n, k, dtype=torch.float64, generator=generator)
    q, _ = torch.linalg.qr(g64 @ omega)  # m x k, ~ column space of g
    u_small, _, _ = torch.linalg.svd(q.T @ g64, full_matrices=False)
    return (q @ u_small[:, :rank]).to(g.dtype)  # m x rank


def build_projector(
    proj_type: str,
    g: Tensor,
    rank: int,
    *,
    t: int = 1,
    indices_fn: Callable[[int, Tensor], Tensor] | None = None,
    basis_fn: Callable[[int, Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Projector:
    """Build the projector of ``proj_type`` from the gradient ``g`` (shape m x n) at step ``t``.

    * ``svd``: thin SVD of g in float64; tall: B = top-r rows of V^T; wide: A = top-r columns of U;
      r is clamped to min(m, n).
    * ``randomized``: like ``svd`` (same sides and basis shapes) but the basis is ``basis_fn(t, g)`` when
      given, else a Gaussian randomized range finder drawn from ``generator``.
    * ``topk``: tall: the r rows of largest L2 norm; wide: the r columns. Order: decreasing norm, ties broken
      by lower index first. r is clamped to max(m, n).
    * ``uniform``: tall rows / wide columns ``indices_fn(t, g)`` when given (used in the order given), else
      the first r entries of ``torch.randperm(max(m, n), generator=generator)``.
    """
    if g.ndim != 2:
        raise ValueError(f"subspace momentum needs a 2-D parameter, got shape {tuple(g.shape)}")
    m, n = g.shape
    tall = m >= n
    shape = (m, n)

    if proj_type in ("svd", "randomized"):
        r = _clamp_rank(rank, min(m, n), proj_type)
        if proj_type == "svd":
            u, _, vh = torch.linalg.svd(g.to(torch.float64), full_matrices=False)
            basis = (vh[:r, :] if tall else u[:, :r]).to(g.dtype)
        elif basis_fn is not None:
            basis = basis_fn(t, g)
        else:
            basis = _randomized_basis(g, r, generator)
        expected = (r, n) if tall else (m, r)
        if tuple(basis.shape) != expected:
            raise ValueError(f"{proj_type} basis has shape {tuple(basis.shape)}, expected {expected}")
        return Projector("right" if tall else "left", shape, basis=basis)

    if proj_type in ("topk", "uniform"):
        longer = m if tall else n
        r = _clamp_rank(rank, longer, proj_type)
        if proj_type == "topk":
            norms = torch.linalg.vector_norm(g, dim=1 if tall else 0)
            idx = torch.argsort(norms, descending=True, stable=True)[:r]
        elif indices_fn is not None:
            idx = torch.as_tensor(indices_fn(t, g), dtype=torch.long)
        else:
            idx = torch.randperm(longer, generator=generator)[:r]
        if idx.ndim != 1 or idx.numel() != r or len(set(idx.tolist())) != r:
            raise ValueError(f"{proj_type} needs {r} distinct indices, got {idx.tolist()}")
        if int(idx.min()) < 0 or int(idx.max()) >= longer:
            raise ValueError(f"{proj_type} indices out of range [0, {longer}): {idx.tolist()}")
        return Projector("rows" if tall else "columns", shape, indices=idx)

    raise ValueError(f"unknown proj_type {proj_type!r}; expected one of {PROJ_TYPES}")


def carry_momentum(m_old: Tensor, old: Projector, new: Projector) -> Tensor:
    """Express the projected momentum of ``old`` in the coordinates of ``new`` (the `transform` policy).

    * right: the momentum stands for P*(M) = M B, so M_new = M_old B_old B_new^T.
    * left: P*(M) = A M, so M_new = A_new^T A_old M_old.
    * rows/columns: a row (column) whose parameter index is selected before and after moves to its new slot;
      all other slots are zero.
    """
    if old.side != new.side:
        raise ValueError(f"projector side changed from {old.side} to {new.side}")
    if new.side == "right":
        return m_old @ old.basis @ new.basis.T
    if new.side == "left":
        return new.basis.T @ old.basis @ m_old
    old_slot = {index: slot for slot, index in enumerate(old.indices.tolist())}
    m_new = torch.zeros_like(m_old)
    for new_slot, index in enumerate(new.indices.tolist()):
        if index in old_slot:
            if new.side == "rows":
                m_new[new_slot, :] = m_old[old_slot[index], :]
            else:
                m_new[:, new_slot] = m_old[:, old_slot[index]]
    return m_new


def subspace_momentum_run(
    theta0: Tensor,
    grads: Sequence[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction: bool,
    subset_size: SubsetSize,
    rank: int,
    update_proj_gap: int,
    proj_type: str,
    policy: str,
    seed: int | None = None,
    indices_fn: Callable[[int, Tensor], Tensor] | None = None,
    basis_fn: Callable[[int, Tensor], Tensor] | None = None,
    trace: list[dict] | None = None,
) -> tuple[list[Tensor], dict]:
    """Subspace momentum numerator over a Subset-Norm denominator (SNSM) for one 2-D parameter.

    Per step t = 1, 2, ...::

        if t == 1 or t % update_proj_gap == 0: rebuild P from g_t; at t > 1 apply ``policy`` to M:
            reset: M <- 0 (before this step's EMA);  keep: M unchanged;  transform: M <- carry_momentum(M)
        theta <- theta * (1 - lr * wd)
        M <- beta1 M + (1 - beta1) P(g)
        N  = P*(M) + (g - P*(P(g)))
        V  <- Subset-Norm accumulator of the FULL gradient g (subset_size None: coordinate-wise)
        theta_j <- theta_j - lr / bc1 * N_j / (sqrt(V_psi(j) / bc2) + eps)

    ``beta1 == 0`` still goes through the projection (then N = g up to round-off). ``seed`` seeds the
    default random draws of ``uniform`` / ``randomized`` (None: torch's global RNG); ``indices_fn`` /
    ``basis_fn`` (called as ``fn(t, g)`` at each rebuild) replace those draws. If ``trace`` is a list, one
    dict per step is appended with keys ``t``, ``rebuilt``, ``numerator``, ``residual``, ``exp_avg``,
    ``projector``.

    State keys: ``step``, ``exp_avg`` (projected momentum: svd right m x r, left r x n; rows r x n,
    columns m x r), ``exp_avg_sq`` (SN accumulator), ``side``, and ``basis`` (svd/randomized) or ``indices``
    (topk/uniform).
    """
    _check_common(lr, beta1, beta2, eps, weight_decay)
    _check_grads(theta0, grads)
    if theta0.ndim != 2:
        raise ValueError(f"subspace momentum needs a 2-D parameter, got shape {tuple(theta0.shape)}")
    if proj_type not in PROJ_TYPES:
        raise ValueError(f"unknown proj_type {proj_type!r}; expected one of {PROJ_TYPES}")
    if policy not in MOMENTUM_POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {MOMENTUM_POLICIES}")
    if update_proj_gap < 1:
        raise ValueError(f"update_proj_gap must be >= 1, got {update_proj_gap}")

    layout, _ = subset_partition(theta0.shape, subset_size)
    subsets = layout.subsets()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None

    theta = theta0.clone()
    projector: Projector | None = None
    m: Tensor | None = None
    v = torch.zeros(layout.acc_shape, dtype=theta0.dtype)
    params = []
    for t, g in enumerate(grads, start=1):
        rebuilt = projector is None or t % update_proj_gap == 0
        if rebuilt:
            new = build_projector(
                proj_type, g, rank, t=t, indices_fn=indices_fn, basis_fn=basis_fn, generator=generator
            )
            if projector is None or policy == "reset":
                m = torch.zeros_like(new.project(g))
            elif policy == "transform":
                m = carry_momentum(m, projector, new)
            # policy == "keep": the coordinates stay as they are, now read in the new basis
            projector = new

        theta = _decoupled_decay(theta, lr, weight_decay)
        projected = projector.project(g)
        m = beta1 * m + (1.0 - beta1) * projected
        residual = g - projector.back_project(projected)
        numerator = projector.back_project(m) + residual
        v = _ema_or_sum(v, _subset_square_sums(g, subsets, layout.acc_shape), beta2)
        bc1, bc2 = _bias_corrections(t, beta1, beta2, bias_correction)
        denom = torch.sqrt(v / bc2) + eps
        theta = theta - (lr / bc1) * numerator / _spread(denom, subsets, tuple(theta.shape))
        params.append(theta)
        if trace is not None:
            trace.append(
                {
                    "t": t,
                    "rebuilt": rebuilt,
                    "numerator": numerator,
                    "residual": residual,
                    "exp_avg": m,
                    "projector": projector,
                }
            )

    state: dict = {"step": len(grads), "exp_avg": m, "exp_avg_sq": v}
    if projector is not None:
        state["side"] = projector.side
        if projector.basis is not None:
            state["basis"] = projector.basis
        else:
            state["indices"] = projector.indices
    return params, state
