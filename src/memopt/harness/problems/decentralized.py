"""A sum of local quadratics with a known minimizer, one per node, for the decentralized methods.

``f_i(x) = 1/2 (x - b_i)^T A_i (x - b_i)`` with ``A_i`` symmetric, eigenvalues in ``[mu, L]``. The minimizer of
``sum_i f_i`` solves ``(sum_i A_i) x* = sum_i A_i b_i``. The convex conjugate is
``f_i^*(v) = b_i^T v + 1/2 v^T A_i^{-1} v``, so ``grad f_i^*(v) = b_i + A_i^{-1} v`` (the dual oracle that the
dual baselines need).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QuadraticSum:
    """Node ``i`` holds ``A[i]`` (``dim x dim``) and ``b[i]``; float64 numpy arrays."""

    A: np.ndarray
    b: np.ndarray
    mu: float
    L: float

    @property
    def n(self) -> int:
        return self.A.shape[0]

    @property
    def dim(self) -> int:
        return self.A.shape[1]

    @property
    def minimizer(self) -> np.ndarray:
        return np.linalg.solve(self.A.sum(0), np.einsum("nij,nj->i", self.A, self.b))

    def value(self, x: np.ndarray) -> float:
        """``sum_i f_i(x)``."""
        diff = x[None, :] - self.b
        return float(0.5 * np.einsum("ni,nij,nj->", diff, self.A, diff))

    def grad(self, i: int, x: np.ndarray) -> np.ndarray:
        return self.A[i] @ (x - self.b[i])

    def grads(self, x: np.ndarray) -> np.ndarray:
        """Every node's gradient at its own row of ``x`` (shape ``(n, dim)``)."""
        return np.einsum("nij,nj->ni", self.A, x - self.b)

    def dual_grads(self, v: np.ndarray) -> np.ndarray:
        """``grad f_i^*(v_i) = b_i + A_i^{-1} v_i`` for every node (shape ``(n, dim)``)."""
        return self.b + np.linalg.solve(self.A, v[..., None])[..., 0]


def quadratic_sum(n: int, dim: int, mu: float = 0.1, L: float = 1.0, seed: int = 0) -> QuadraticSum:
    """``n`` random quadratics: ``A_i = Q_i diag(lambda_i) Q_i^T`` with ``Q_i`` a random rotation and
    ``lambda_i`` uniform in ``[mu, L]`` with both ends attained; ``b_i ~ N(0, I)``."""
    if n < 1 or dim < 1:
        raise ValueError(f"n and dim must be >= 1, got n={n}, dim={dim}.")
    if not 0 < mu <= L:
        raise ValueError(f"need 0 < mu <= L, got mu={mu}, L={L}.")
    rng = np.random.default_rng(seed)
    mats = np.empty((n, dim, dim))
    for i in range(n):
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        lam = rng.uniform(mu, L, dim)
        lam[0], lam[-1] = mu, L
        mats[i] = (q * lam) @ q.T
    mats = 0.5 * (mats + mats.transpose(0, 2, 1))
    return QuadraticSum(mats, rng.standard_normal((n, dim)), float(mu), float(L))
