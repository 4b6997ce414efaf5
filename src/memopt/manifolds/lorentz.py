"""The Lorentz model (hyperboloid) ``H_k = {x in R^{n+1} : <x, x>_L = -k, x_0 > 0}``, curvature ``-1/k``.

With the Minkowski product ``<x, y>_L = -x_0 y_0 + sum_{j>=1} x_j y_j`` (geoopt's convention, ``k > 0``)::

    projx(x)       = (sqrt(k + ||x_{1:}||^2), x_{1:})                 (the spatial part is kept)
    proju(x, u)    = u + <x, u>_L / k x
    rgrad          = proju(x, G^{-1} g),   G = diag(-1, 1, ..., 1)    (out of place: ``g`` is not changed)
    ||u||_L        = sqrt(max(<u, u>_L, 0))
    exp_x(u)       = cosh(||u||_L / sqrt(k)) x + sqrt(k) sinh(||u||_L / sqrt(k)) u / ||u||_L
    d(x, y)        = sqrt(k) arcosh(-<x, y>_L / k)
    P_{x->y}(v)    = v + <y, v>_L / (k - <x, y>_L) (x + y)            (parallel transport along the geodesic)

The retraction is the exponential map followed by ``projx`` (as in geoopt). Guards: ``sinh(t)/t`` uses its
Taylor series for ``t < 1e-4`` (so ``exp_x(0) = x`` exactly), ``t`` is clamped to ``<= 50`` (cosh overflows
float32 at 89), and arcosh arguments are clamped to ``>= 1``. Points far from the origin lose precision in
float32 (the coordinates grow like ``e^d``); prefer float64, as geoopt's documentation does.
"""

from __future__ import annotations

import math

import torch

from memopt.manifolds.base import Manifold, generator_randn

MAX_ANGLE = 50.0


def minkowski(x: torch.Tensor, y: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """``<x, y>_L = -x_0 y_0 + sum_{j>=1} x_j y_j`` over the last dimension."""
    prod = x * y
    out = prod[..., 1:].sum(-1, keepdim=keepdim) - (prod[..., :1] if keepdim else prod[..., 0])
    return out


def _sinhc(t: torch.Tensor) -> torch.Tensor:
    """``sinh(t)/t``, exact at 0."""
    small = t < 1e-4
    safe = torch.where(small, torch.ones_like(t), t)
    return torch.where(small, 1 + t * t / 6, torch.sinh(safe) / safe)


class Lorentz(Manifold):
    """The hyperboloid ``<x, x>_L = -k`` in the last dimension (``n + 1`` coordinates for dimension ``n``)."""

    ndim = 1
    name = "Lorentz"

    def __init__(self, k: float = 1.0) -> None:
        if not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
            raise ValueError(f"Invalid k: {k!r}. The Lorentz model needs k > 0 (curvature -1/k), e.g. 1.0.")
        self.k = float(k)

    def check_shape(self, shape):
        problem = super().check_shape(shape)
        if problem is None and shape[-1] < 2:
            problem = f"a Lorentz point needs n + 1 >= 2 coordinates in the last dimension, got shape {tuple(shape)}"
        return problem

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x[..., 1:]
        time = torch.sqrt(self.k + (spatial * spatial).sum(-1, keepdim=True))
        return torch.cat([time, spatial], dim=-1)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u + minkowski(x, u, keepdim=True) / self.k * x

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        flipped = torch.cat([-g[..., :1], g[..., 1:]], dim=-1)
        return self.proju(x, flipped)

    def inner(self, x, u, v=None, *, keepdim=False):
        return minkowski(u, u if v is None else v, keepdim=keepdim)

    def component_inner(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return minkowski(u, u, keepdim=True).clamp_min(0)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        sk = math.sqrt(self.k)
        theta = (self.norm(x, u, keepdim=True) / sk).clamp_max(MAX_ANGLE)
        return self.projx(torch.cosh(theta) * x + _sinhc(theta) * u)

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = y + minkowski(x, y, keepdim=True) / self.k * x
        norm = self.norm(x, w, keepdim=True).clamp_min(1e-15)
        return self.dist(x, y).unsqueeze(-1) * w / norm

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.expmap(x, u)

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        coef = minkowski(y, v, keepdim=True) / (self.k - minkowski(x, y, keepdim=True))
        return v + coef * (x + y)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return math.sqrt(self.k) * torch.acosh((-minkowski(x, y) / self.k).clamp_min(1.0))

    def origin(self, *batch: int, dtype: torch.dtype = torch.float32, dim: int = 2) -> torch.Tensor:
        """The point ``(sqrt(k), 0, ..., 0)`` with ``dim + 1`` coordinates."""
        x = torch.zeros(*batch, dim + 1, dtype=dtype)
        x[..., 0] = math.sqrt(self.k)
        return x

    def random(self, *shape: int, dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None):
        """``projx`` of a point whose spatial part is standard normal (distance about 1 from the origin)."""
        return self.projx(generator_randn(shape, dtype, generator))

    def _point_error(self, x: torch.Tensor) -> tuple[float, str]:
        if not x.numel():
            return 0.0, ""
        if bool((x[..., 0] <= 0).any()):
            return math.inf, "the time coordinate x_0 of a point (must be > 0)"
        relative = (minkowski(x, x) + self.k).abs() / (x[..., 0] ** 2).clamp_min(1.0)
        return float(relative.max()), "<x, x>_L + k of a point (must be 0; relative to x_0^2)"

    def __repr__(self) -> str:
        return f"Lorentz(k={self.k})"
