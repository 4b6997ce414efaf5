"""A noisy non-convex finite sum: robust (Cauchy-type) regression with a non-convex penalty.

``F(x) = (1/n) sum_i log(1 + (a_i^T x - y_i)^2 / 2) + lam sum_j x_j^2 / (1 + x_j^2)``, with ``a_i ~ N(0, I)``,
``y_i = a_i^T x_true + noise`` and a fraction of gross outliers. Each term is smooth; the log loss and the
penalty make ``F`` non-convex. Minibatch gradients (indices drawn uniformly with replacement) are the
stochastic oracle; :meth:`NoisyNonconvexSum.loss` takes the indices, so the same minibatch can be
evaluated at two points (the STORM correction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoisyNonconvexSum:
    """Data ``a`` (n, d), ``y`` (n,) and penalty ``lam`` of the finite sum (module docstring)."""

    a: torch.Tensor
    y: torch.Tensor
    lam: float

    @property
    def n(self) -> int:
        return self.a.shape[0]

    @property
    def dim(self) -> int:
        return self.a.shape[1]

    def loss(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over the samples ``index`` (all samples if None), plus the penalty."""
        a, y = (self.a, self.y) if index is None else (self.a[index], self.y[index])
        r = a @ x - y
        return torch.log1p(r * r / 2).mean() + self.lam * (x * x / (1 + x * x)).sum()

    def full_grad(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            (g,) = torch.autograd.grad(self.loss(x), x)
        return g

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of a minibatch, uniform with replacement."""
        return torch.randint(0, self.n, (batch,), generator=generator)


def noisy_nonconvex_sum(
    n: int = 2000, dim: int = 50, lam: float = 0.1, noise: float = 0.5, outliers: float = 0.1, seed: int = 0
) -> NoisyNonconvexSum:
    """Draw the finite sum from ``seed`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x_true = torch.randn(dim, generator=g, dtype=torch.float64)
    y = a @ x_true + noise * torch.randn(n, generator=g, dtype=torch.float64)
    flip = torch.rand(n, generator=g, dtype=torch.float64) < outliers
    y = torch.where(flip, 10 * torch.randn(n, generator=g, dtype=torch.float64), y)
    return NoisyNonconvexSum(a, y, lam)
