"""Streaming least squares with a chosen data covariance, and its excess risk per eigen-subspace.

``x ~ N(0, H)`` with ``H = diag(eigenvalues)``, ``y = x^T w* + sigma * noise``. The excess risk of ``w`` is
``R(w) - R(w*) = 1/2 sum_i lambda_i (w_i - w*_i)^2``; restricting the sum to a set of coordinates gives the
risk in that eigen-subspace (the split used by Li, Deng, Wu, Zhou & Gu, arXiv 2311.14222, to compare SGD
and accelerated SGD: ASGD's bias decays faster in the small-eigenvalue subspace, slower in the
large-eigenvalue one, and its variance is larger).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LinearRegressionStream:
    """One-pass linear regression: ``sample`` draws fresh data each call."""

    eigenvalues: torch.Tensor
    w_star: torch.Tensor
    sigma: float

    @property
    def dim(self) -> int:
        return self.eigenvalues.numel()

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(batch, self.dim, generator=generator, dtype=self.eigenvalues.dtype) * self.eigenvalues.sqrt()
        noise = torch.randn(batch, generator=generator, dtype=self.eigenvalues.dtype)
        return x, x @ self.w_star + self.sigma * noise

    def gradient(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient of the minibatch loss ``mean (x^T w - y)^2 / 2``."""
        return x.T @ (x @ w - y) / x.shape[0]

    def excess_risk(self, w: torch.Tensor, mask: torch.Tensor | None = None) -> float:
        """``1/2 sum_i lambda_i (w_i - w*_i)^2`` over all coordinates, or those in ``mask``."""
        terms = self.eigenvalues * (w - self.w_star) ** 2 / 2
        return float(terms.sum() if mask is None else terms[mask].sum())


def power_law_stream(dim: int, power: float = 2.0, sigma: float = 0.1, dtype: torch.dtype = torch.float64):
    """Eigenvalues ``i^-power`` (i = 1..dim), ``w* = 0`` (the initial point sets ``w0 - w*``)."""
    eigenvalues = torch.arange(1, dim + 1, dtype=dtype) ** (-power)
    return LinearRegressionStream(eigenvalues, torch.zeros(dim, dtype=dtype), sigma)
