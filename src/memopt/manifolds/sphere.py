"""The unit sphere ``S^{n-1} = {x in R^n : ||x|| = 1}`` with the metric induced by R^n.

* ``proju(x, u) = u - <x, u> x``; ``egrad2rgrad = proju``.
* ``expmap(x, u) = cos(||u||) x + sin(||u||) u / ||u||`` (falls back to the retraction for ``||u|| <=``
  1e-4 in float32, 1e-7 in float64, like geoopt).
* ``retr(x, u) = (x + u) / ||x + u||`` (a second-order retraction).
* ``transp``: with ``exact=False`` (default, geoopt's ``Sphere``) the projection vector transport
  ``proju(y, v)`` (not an isometry); with ``exact=True`` the step is the exponential map and the transport
  is parallel transport along the geodesic, ``v - <y, v> / (1 + <x, y>) (x + y)`` (an isometry; not
  defined for antipodal ``y = -x``).
* ``dist(x, y) = arccos(<x, y>)``, the argument clamped to ``[-1 + EPS, 1 - EPS]``.
"""

from __future__ import annotations

import torch

from memopt.manifolds.base import MIN_NORM, Manifold, generator_randn

#: below this step norm the exponential map uses the retraction (cos/sin lose precision), by dtype
EPS = {torch.float32: 1e-4, torch.float64: 1e-7}


class Sphere(Manifold):
    """Unit vectors in the last dimension; ``exact=True`` steps by the exponential map and parallel transport."""

    ndim = 1
    name = "Sphere"

    def __init__(self, exact: bool = False) -> None:
        self.exact = exact

    def check_shape(self, shape):
        problem = super().check_shape(shape)
        if problem is None and shape[-1] < 2:
            problem = f"a Sphere point needs at least 2 coordinates in the last dimension, got shape {tuple(shape)}"
        return problem

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u - (x * u).sum(-1, keepdim=True) * x

    def _retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.projx(x + u)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        norm_u = u.norm(dim=-1, keepdim=True)
        exp = x * torch.cos(norm_u) + u * torch.sin(norm_u) / norm_u.clamp_min(MIN_NORM)
        return torch.where(norm_u > EPS.get(x.dtype, 1e-4), exp, self._retr(x, u))

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.expmap(x, u) if self.exact else self._retr(x, u)

    def parallel_transport(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Parallel transport along the minimising geodesic from ``x`` to ``y`` (an isometry)."""
        xy = (x * y).sum(-1, keepdim=True)
        return v - (y * v).sum(-1, keepdim=True) / (1 + xy).clamp_min(MIN_NORM) * (x + y)

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.parallel_transport(x, y, v) if self.exact else self.proju(y, v)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps = EPS.get(x.dtype, 1e-4)
        return torch.acos((x * y).sum(-1).clamp(-1 + eps, 1 - eps))

    def random(self, *shape: int, dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None):
        return self.projx(generator_randn(shape, dtype, generator))

    def _point_error(self, x: torch.Tensor) -> tuple[float, str]:
        return float((x.norm(dim=-1) - 1).abs().max()) if x.numel() else 0.0, "the norm of a point (must be 1)"

    def __repr__(self) -> str:
        return f"Sphere(exact={self.exact})"
