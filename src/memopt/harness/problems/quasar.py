"""Smooth quasar-convex functions with a known quasar-convexity constant gamma.

``f`` is gamma-quasar-convex with respect to its minimiser ``x*`` when
``f(x*) >= f(x) + <grad f(x), x* - x> / gamma`` for all ``x`` (Hinder, Sidford & Sohoni, arXiv
1906.11985). In one dimension, with the minimum 0 at 0, this reads ``z h'(z) >= gamma h(z)``: gamma is
``inf_z z h'(z) / h(z)``, the smallest slope of ``log h`` against ``log |z|``.

Two one-dimensional profiles:

* :func:`bump` ``h_gamma(z) = z^2 exp(-2 (2 - gamma) z^2 / (1 + z^2))``, whose ratio is
  ``z h'/h = 2 - 2 (2 - gamma) z^2 / (1 + z^2)^2`` with minimum exactly ``gamma`` at ``|z| = 1``: a
  closed-form family, non-convex for small gamma (nearly flat around ``|z| = 1``), quadratic near 0 and
  ``z^2 e^{-2(2-gamma)}`` far away. (Our construction.)
* :func:`sine_quadratic` ``h(z) = z^2 + 3 sin^2 z``: non-convex (``min h'' = -4``) and gamma-quasar-convex
  with ``gamma = inf z h'/h ~ 0.4962`` (attained near ``|z| ~ 2.1``); ``L = 8``.

A separable sum ``f(x) = sum_i w_i h(x_i - c_i)`` keeps the profile's gamma exactly (the condition is linear
in ``f`` and all terms share the minimiser ``c``; equality holds with every coordinate at the worst ratio)
and is ``max_i w_i L_h``-smooth. Any rotation keeps both, and first-order methods are rotation-equivariant,
so the separable form loses no generality for tests. Hinder et al.'s motivating example, learning linear
dynamical systems (Hardt, Ma & Recht), is not included.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch

Profile = Callable[[torch.Tensor], torch.Tensor]


def bump(z: torch.Tensor, gamma: float) -> torch.Tensor:
    """``h_gamma(z) = z^2 exp(-2 (2 - gamma) z^2 / (1 + z^2))``: exactly gamma-quasar-convex (gamma in (0, 1])."""
    z2 = z * z
    return z2 * torch.exp(-2 * (2 - gamma) * z2 / (1 + z2))


def sine_quadratic(z: torch.Tensor) -> torch.Tensor:
    """``h(z) = z^2 + 3 sin^2 z`` (non-convex, gamma ~ 0.4962, L = 8)."""
    return z * z + 3 * torch.sin(z) ** 2


def _grid(half_width: float = 12.0, points: int = 400_001) -> torch.Tensor:
    return torch.linspace(-half_width, half_width, points, dtype=torch.float64)


def quasar_constant(profile: Profile) -> float:
    """``inf_z z h'(z) / h(z)`` of a 1-D profile with minimum 0 at 0, on a fine grid of [-12, 12]."""
    z = _grid().requires_grad_()
    h = profile(z)
    (dh,) = torch.autograd.grad(h.sum(), z)
    mask = z.detach().abs() > 1e-3
    return float((z.detach() * dh / h.detach())[mask].min())


def smoothness(profile: Profile) -> float:
    """``max |h''(z)|`` of a 1-D profile on a fine grid of [-12, 12] (its tails are flatter)."""
    z = _grid(points=200_001).requires_grad_()
    (dh,) = torch.autograd.grad(profile(z).sum(), z, create_graph=True)
    (d2h,) = torch.autograd.grad(dh.sum(), z)
    return float(d2h.abs().max())


@lru_cache(maxsize=64)
def bump_smoothness(gamma: float) -> float:
    """``max |h_gamma''|`` (computed once per gamma)."""
    return smoothness(lambda z: bump(z, gamma))


@dataclass(frozen=True)
class SeparableQuasar:
    """``f(x) = sum_i weights_i h(x_i - center_i)``, gamma-quasar-convex with minimum 0 at ``center``."""

    profile: Profile
    weights: torch.Tensor
    center: torch.Tensor
    gamma: float
    L: float

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return (self.weights * self.profile(x - self.center)).sum()

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            (g,) = torch.autograd.grad(self.value(x), x)
        return g

    @property
    def f_star(self) -> float:
        return 0.0


def bump_problem(gamma: float, weights: torch.Tensor, center: torch.Tensor) -> SeparableQuasar:
    """The separable sum of :func:`bump` profiles: exactly gamma-quasar-convex, ``L = max w * L_h``."""
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must lie in (0, 1], got {gamma!r}.")
    weights = weights.to(torch.float64)
    return SeparableQuasar(
        lambda z: bump(z, gamma),
        weights,
        center.to(torch.float64),
        gamma,
        float(weights.max()) * bump_smoothness(gamma),
    )


def sine_problem(weights: torch.Tensor, center: torch.Tensor) -> SeparableQuasar:
    """The separable sum of ``z^2 + 3 sin^2 z`` profiles (gamma ~ 0.4962, ``L = 8 max w``)."""
    weights = weights.to(torch.float64)
    return SeparableQuasar(
        sine_quadratic, weights, center.to(torch.float64), quasar_constant(sine_quadratic), 8 * float(weights.max())
    )


def log_spaced(n: int, low: float, high: float = 1.0) -> torch.Tensor:
    """``n`` weights log-spaced in ``[low, high]`` (float64)."""
    return torch.logspace(math.log10(low), math.log10(high), n, dtype=torch.float64)
