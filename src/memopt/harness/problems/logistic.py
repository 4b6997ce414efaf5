"""L2-regularised logistic regression on synthetic data (strongly convex, smooth)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogisticRegression:
    """``f(w) = mean_i log(1 + exp(-y_i a_i^T w)) + reg/2 ||w||^2`` with labels ``y_i`` in {-1, +1}.

    ``L <= max_eig(A^T A)/(4 n) + reg`` and ``mu >= reg`` (:attr:`L`, :attr:`mu`).
    """

    a: torch.Tensor
    y: torch.Tensor
    reg: float

    def value(self, w: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        a, y = (self.a, self.y) if index is None else (self.a[index], self.y[index])
        return torch.nn.functional.softplus(-y * (a @ w)).mean() + self.reg / 2 * (w * w).sum()

    def grad(self, w: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            w = w.detach().requires_grad_()
            (g,) = torch.autograd.grad(self.value(w), w)
        return g

    @property
    def L(self) -> float:
        return float(torch.linalg.eigvalsh(self.a.T @ self.a).max()) / (4 * self.a.shape[0]) + self.reg

    @property
    def mu(self) -> float:
        return self.reg


def logistic_regression(n: int = 500, dim: int = 20, reg: float = 1e-2, seed: int = 0) -> LogisticRegression:
    """Features ``N(0, I)`` scaled by ``1/sqrt(i)`` per column, labels from a random logistic model."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, dim, generator=g, dtype=torch.float64) / torch.arange(1, dim + 1, dtype=torch.float64).sqrt()
    w_true = 3 * torch.randn(dim, generator=g, dtype=torch.float64)
    p = torch.sigmoid(a @ w_true)
    y = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < p, 1.0, -1.0).to(torch.float64)
    return LogisticRegression(a, y, reg)
