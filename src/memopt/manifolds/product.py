"""A product of manifolds in one tensor: the last dimension concatenates the factors' (flattened) points.

``Product((PoincareBall(), (5,)), (Sphere(), (3,)), (Stiefel(), (4, 2)))`` holds points of shape
``(..., 5 + 3 + 8)``; every operation splits the last dimension, applies each factor's operation to its
slice (reshaped to the factor's point shape) and concatenates. ``component_inner`` gives **one value per
factor**, ``||u_i||^2_{x_i}`` (a Euclidean factor of several coordinates counts as one factor here), which
is exactly the adaptivity "across manifolds in the cartesian product" of Bécigneul & Ganea (ICLR 2019):
Riemannian Adam keeps one second-moment scalar per factor. Separate parameters with their own manifolds
in one optimizer are the other (and more common) way of building a product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from memopt.manifolds.base import Manifold


class Product(Manifold):
    """``M_1 x ... x M_m``, each factor given as ``(manifold, point_shape)``."""

    ndim = 1
    name = "Product"

    def __init__(self, *factors: tuple[Manifold, Sequence[int]]) -> None:
        if not factors:
            raise ValueError("Product needs at least one (manifold, point_shape) factor.")
        self.factors: list[tuple[Manifold, tuple[int, ...]]] = []
        for manifold, shape in factors:
            shape = tuple(int(s) for s in shape)
            problem = manifold.check_shape(shape)
            if problem is not None or (len(shape) != manifold.ndim and manifold.ndim != 0):
                raise ValueError(f"Invalid factor {manifold!r} with point shape {shape}: {problem or 'wrong rank'}.")
            self.factors.append((manifold, shape))
        self.sizes = [math.prod(shape) for _, shape in self.factors]

    @property
    def dim(self) -> int:
        """Length of the last dimension (the sum of the factors' sizes)."""
        return sum(self.sizes)

    def check_shape(self, shape):
        problem = super().check_shape(shape)
        if problem is None and shape[-1] != self.dim:
            problem = (
                f"the last dimension must be {self.dim} (the factors' sizes {self.sizes}), got shape {tuple(shape)}"
            )
        return problem

    def _split(self, t: torch.Tensor) -> list[torch.Tensor]:
        batch = t.shape[:-1]
        return [piece.reshape(*batch, *shape) for piece, (_, shape) in zip(t.split(self.sizes, -1), self.factors)]

    def _join(self, pieces: Sequence[torch.Tensor], batch: Sequence[int]) -> torch.Tensor:
        return torch.cat([p.reshape(*batch, -1) for p in pieces], -1)

    def _map(self, op: str, *tensors: torch.Tensor) -> torch.Tensor:
        split = [self._split(t) for t in tensors]
        out = [getattr(m, op)(*(s[i] for s in split)) for i, (m, _) in enumerate(self.factors)]
        return self._join(out, tensors[0].shape[:-1])

    def projx(self, x):
        return self._map("projx", x)

    def proju(self, x, u):
        return self._map("proju", x, u)

    def egrad2rgrad(self, x, g):
        return self._map("egrad2rgrad", x, g)

    def retr(self, x, u):
        return self._map("retr", x, u)

    def expmap(self, x, u):
        return self._map("expmap", x, u)

    def transp(self, x, y, v):
        return self._map("transp", x, y, v)

    def retr_transp(self, x, u, v):
        xs, us, vs = self._split(x), self._split(u), self._split(v)
        pairs = [m.retr_transp(xi, ui, vi) for (m, _), xi, ui, vi in zip(self.factors, xs, us, vs)]
        batch = x.shape[:-1]
        return self._join([p[0] for p in pairs], batch), self._join([p[1] for p in pairs], batch)

    @staticmethod
    def _per_factor(values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Reduce a factor's per-point values (keepdim, or elementwise for ndim 0) to one number per point."""
        return values.reshape(*values.shape[: values.dim() - len(shape)], -1).sum(-1)

    def factor_inners(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """``<u_i, v_i>_{x_i}`` per factor: shape ``(..., number of factors)``."""
        v = u if v is None else v
        out = []
        for (m, shape), xi, ui, vi in zip(self.factors, self._split(x), self._split(u), self._split(v)):
            out.append(self._per_factor(m.inner(xi, ui, vi, keepdim=True), shape))
        return torch.stack(out, -1)

    def inner(self, x, u, v=None, *, keepdim=False):
        return self.factor_inners(x, u, v).sum(-1, keepdim=keepdim)

    def component_inner(self, x, u):
        out = []
        for (m, shape), xi, ui in zip(self.factors, self._split(x), self._split(u)):
            out.append(self._per_factor(m.component_inner(xi, ui), shape))
        return torch.stack(out, -1)

    def component_shape(self, shape):
        return (*tuple(shape)[:-1], len(self.factors))

    def expand_components(self, values, x):
        sizes = torch.tensor(self.sizes, device=values.device)
        return values.repeat_interleave(sizes, dim=-1)

    def dist(self, x, y):
        """``sqrt(sum_i d_i(x_i, y_i)^2)``, the product metric's distance."""
        total = 0
        for (m, _), xi, yi in zip(self.factors, self._split(x), self._split(y)):
            d = m.dist(xi, yi)
            total = total + d.reshape(*x.shape[:-1], -1).pow(2).sum(-1)
        return total.sqrt()

    def random(self, *shape, dtype=torch.float32, generator=None):
        batch = tuple(shape)[:-1]
        return self._join([m.random(*batch, *s, dtype=dtype, generator=generator) for m, s in self.factors], batch)

    def check_point(self, x, atol=None):
        problem = self.check_shape(x.shape)
        if problem is not None:
            return problem
        for i, ((m, _), xi) in enumerate(zip(self.factors, self._split(x))):
            problem = m.check_point(xi, atol)
            if problem is not None:
                return f"factor {i} ({m!r}): {problem}"
        return None

    def _point_error(self, x):  # pragma: no cover - check_point is overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return "Product(" + ", ".join(f"({m!r}, {s})" for m, s in self.factors) + ")"
