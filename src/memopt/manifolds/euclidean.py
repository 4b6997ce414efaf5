"""The Euclidean manifold: every coordinate is a factor, so the Riemannian methods are the Euclidean ones.

``ndim = 0``: each entry is one point of the real line, the product of ``d`` copies of R is R^d, and the
per-factor second moment of Riemannian Adam is the per-coordinate ``g^2`` of Adam (Bécigneul & Ganea:
"choosing the Euclidean space as Riemannian manifold yields the same algorithms").
"""

from __future__ import annotations

import torch

from memopt.manifolds.base import Manifold, generator_randn


class Euclidean(Manifold):
    """R^n with the flat metric: ``retr(x, u) = expmap(x, u) = x + u``, transport is the identity."""

    ndim = 0
    name = "Euclidean"

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x + u

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x + u

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs()

    def random(self, *shape: int, dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None):
        return generator_randn(shape, dtype, generator)

    def _point_error(self, x: torch.Tensor) -> tuple[float, str]:
        return 0.0, "nothing"
