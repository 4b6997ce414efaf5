"""The Poincaré ball ``B_c = {x : c ||x||^2 < 1}`` of curvature ``-c`` (``c > 0``), radius ``1/sqrt(c)``.

Formulas (Ganea, Bécigneul & Hofmann 2018; the same as geoopt's ``stereographic/math.py`` with ``k = -c``)::

    x (+) y        = ((1 + 2c<x,y> + c||y||^2) x + (1 - c||x||^2) y) / (1 + 2c<x,y> + c^2 ||x||^2 ||y||^2)
    lambda_x       = 2 / (1 - c||x||^2);        <u, v>_x = lambda_x^2 <u, v>
    rgrad          = g / lambda_x^2
    exp_x(u)       = x (+) tanh(sqrt(c) lambda_x ||u|| / 2) u / (sqrt(c) ||u||)
    log_x(y)       = 2 / (sqrt(c) lambda_x) artanh(sqrt(c) ||w||) w / ||w||,   w = (-x) (+) y
    d(x, y)        = 2/sqrt(c) artanh(sqrt(c) ||(-x) (+) y||)
                   = arcosh(1 + 2c ||x - y||^2 / ((1 - c||x||^2)(1 - c||y||^2))) / sqrt(c)
    gyr[u,v]w      = w + 2 (a u + b v) / d   (closed form, see :func:`gyration`)
    P_{x->y}(v)    = lambda_x / lambda_y gyr[y, -x] v          (parallel transport)

``retr(x, u)`` is ``projx(x + u)`` (a first-order retraction, the Nickel & Kiela update and geoopt's
``PoincareBall``) or, with ``exact=True``, ``projx(exp_x(u))`` (the paper's exponential map, geoopt's
``PoincareBallExact``); the transport is parallel transport in both cases.

**Numerical guards** (float32 is the hard case near the boundary):

* ``projx`` pulls points with ``sqrt(c)||x|| > 1 - eps`` back to norm ``(1 - eps)/sqrt(c)``, with
  ``eps = 4e-3`` in float32 and ``1e-5`` in float64 (:data:`BALL_EPS`, geoopt's values). The largest
  reachable distance from the origin is then ``2 artanh(1 - eps) / sqrt(c)``: 6.2 (float32), 12.2 (float64).
* ``tanh`` arguments are clamped to ``[-15, 15]``, ``artanh`` arguments to ``[-1 + 1e-7, 1 - 1e-7]`` (float32:
  ``1 - 1e-7`` rounds to the largest float below 1), ``arcosh`` arguments to ``>= 1 + 1e-7`` (float32) or
  ``1 + 1e-13`` (float64), so that coinciding points have a finite (zero) distance gradient.
* Every norm used as a divisor is clamped to ``>= 1e-15``; ``1 - c||x||^2`` and the Möbius and gyration
  denominators to ``>= 1e-15``.
* :meth:`PoincareBall.dist` uses the arcosh form, which is accurate near the boundary (the Möbius form
  loses the difference ``x - y`` to cancellation there); the tests check that both forms agree in float64.
"""

from __future__ import annotations

import math

import torch

from memopt.manifolds.base import MIN_NORM, Manifold, generator_randn

#: the boundary margin of ``projx``, by dtype: points stay within ``(1 - eps) / sqrt(c)``
BALL_EPS = {torch.float32: 4e-3, torch.float64: 1e-5, torch.bfloat16: 4e-2, torch.float16: 4e-3}
TANH_CLAMP = 15.0
ARTANH_CLAMP = 1 - 1e-7
#: arcosh arguments are clamped to ``>= 1 + ACOSH_EPS`` (distance >= 4.5e-4 in float32, 4.5e-7 in float64)
ACOSH_EPS = {torch.float32: 1e-7, torch.float64: 1e-13}


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum(-1, keepdim=True)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh`` of the argument clamped to ``[-15, 15]``."""
    return torch.tanh(x.clamp(-TANH_CLAMP, TANH_CLAMP))


def artanh(x: torch.Tensor) -> torch.Tensor:
    """``artanh`` of the argument clamped to ``[-1 + 1e-7, 1 - 1e-7]``."""
    return torch.atanh(x.clamp(-ARTANH_CLAMP, ARTANH_CLAMP))


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Möbius addition ``x (+)_c y``."""
    x2, y2, xy = _dot(x, x), _dot(y, y), _dot(x, y)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c * c * x2 * y2).clamp_min(MIN_NORM)


def lambda_x(x: torch.Tensor, c: float) -> torch.Tensor:
    """The conformal factor ``2 / (1 - c||x||^2)`` (keepdim)."""
    return 2 / (1 - c * _dot(x, x)).clamp_min(MIN_NORM)


def gyration(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor, c: float) -> torch.Tensor:
    """``gyr[u, v] w = (-(u (+) v)) (+) (u (+) (v (+) w))`` in closed form."""
    u2, v2, uv, uw, vw = _dot(u, u), _dot(v, v), _dot(u, v), _dot(u, w), _dot(v, w)
    a = -c * c * uw * v2 + c * vw + 2 * c * c * uv * vw
    b = -c * c * vw * u2 - c * uw
    d = 1 + 2 * c * uv + c * c * u2 * v2
    return w + 2 * (a * u + b * v) / d.clamp_min(MIN_NORM)


def expmap0(u: torch.Tensor, c: float) -> torch.Tensor:
    """``exp_0(u) = tanh(sqrt(c)||u||) u / (sqrt(c)||u||)``."""
    sc = math.sqrt(c)
    norm = u.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    return tanh(sc * norm) * u / (sc * norm)


def logmap0(y: torch.Tensor, c: float) -> torch.Tensor:
    """``log_0(y) = artanh(sqrt(c)||y||) y / (sqrt(c)||y||)``."""
    sc = math.sqrt(c)
    norm = y.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    return artanh(sc * norm) * y / (sc * norm)


def dist_mobius(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """``2/sqrt(c) artanh(sqrt(c) ||(-x) (+) y||)`` (the gyrovector form of the distance)."""
    sc = math.sqrt(c)
    return 2 / sc * artanh(sc * mobius_add(-x, y, c).norm(dim=-1))


def dist_arcosh(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """``arcosh(1 + 2c||x - y||^2 / ((1 - c||x||^2)(1 - c||y||^2))) / sqrt(c)`` (accurate near the boundary)."""
    alpha = (1 - c * (x * x).sum(-1)).clamp_min(MIN_NORM)
    beta = (1 - c * (y * y).sum(-1)).clamp_min(MIN_NORM)
    arg = 1 + 2 * c * ((x - y) ** 2).sum(-1) / (alpha * beta)
    # arcosh'(1) is infinite: clamping just above 1 keeps the gradient finite (zero) when two points coincide,
    # e.g. after both were projected onto the same spot of the boundary
    return torch.acosh(arg.clamp_min(1 + ACOSH_EPS.get(arg.dtype, 1e-7))) / math.sqrt(c)


class PoincareBall(Manifold):
    """The Poincaré ball of curvature ``-c``; ``exact=True`` steps by the exponential map (module docstring)."""

    ndim = 1
    name = "PoincareBall"

    def __init__(self, c: float = 1.0, exact: bool = False) -> None:
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
            raise ValueError(f"Invalid curvature c: {c!r}. The Poincaré ball has curvature -c with c > 0 (e.g. 1.0).")
        self.c = float(c)
        self.exact = exact

    def max_norm(self, dtype: torch.dtype) -> float:
        """The radius ``(1 - eps) / sqrt(c)`` that ``projx`` keeps points within."""
        return (1 - BALL_EPS.get(dtype, 4e-3)) / math.sqrt(self.c)

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
        limit = self.max_norm(x.dtype)
        return torch.where(norm > limit, x / norm * limit, x)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g / lambda_x(x, self.c) ** 2

    def inner(self, x, u, v=None, *, keepdim=False):
        v = u if v is None else v
        out = lambda_x(x, self.c) ** 2 * _dot(u, v)
        return out if keepdim else out.squeeze(-1)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        sc = math.sqrt(self.c)
        norm = u.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
        # the operation order of geoopt's ``_expmap`` (float32 results then agree bit for bit or nearly)
        second = (1 / sc) * tanh(sc * (lambda_x(x, self.c) / 2 * norm)) * (u / norm)
        return self.projx(mobius_add(x, second, self.c))

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sc = math.sqrt(self.c)
        w = mobius_add(-x, y, self.c)
        norm = w.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
        return 2 / (sc * lambda_x(x, self.c)) * artanh(sc * norm) * w / norm

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.expmap(x, u) if self.exact else self.projx(x + u)

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return gyration(y, -x, v, self.c) * lambda_x(x, self.c) / lambda_x(y, self.c)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return dist_arcosh(x, y, self.c)

    def random(self, *shape: int, dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None):
        """``exp_0`` of a standard normal tangent vector scaled by 1e-3 (points near the origin)."""
        return self.projx(expmap0(1e-3 * generator_randn(shape, dtype, generator), self.c))

    def _point_error(self, x: torch.Tensor) -> tuple[float, str]:
        if not x.numel():
            return 0.0, ""
        excess = float((x.norm(dim=-1) - self.max_norm(x.dtype)).clamp_min(0).max())
        return excess * math.sqrt(self.c), (
            f"the norm of a point (must be at most (1 - eps)/sqrt(c) = {self.max_norm(x.dtype):.6g}, inside the "
            "ball's radius 1/sqrt(c))"
        )

    def __repr__(self) -> str:
        return f"PoincareBall(c={self.c}, exact={self.exact})"
