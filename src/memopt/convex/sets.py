"""Euclidean projections onto simple convex sets (used as the ``project`` callables of the solvers)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from memopt.convex.history import check_positive

Tensor = torch.Tensor


def project_ball(radius: float, center: Tensor | None = None) -> Callable[[Tensor], Tensor]:
    r"""Projection onto :math:`\{x : \|x - c\|_2 \le r\}`: :math:`c + (x-c)\min(1, r/\|x-c\|)`."""
    radius = check_positive("radius", radius)

    def project(x: Tensor) -> Tensor:
        d = x if center is None else x - center
        norm = float(d.norm())
        d = d if norm <= radius else d * (radius / norm)
        return d if center is None else center + d

    return project


def project_box(low: float, high: float) -> Callable[[Tensor], Tensor]:
    r"""Projection onto the box :math:`[l, h]^n` (coordinatewise clamp)."""
    if not low < high:
        raise ValueError(f"need low < high for a box, got low={low}, high={high}.")
    return lambda x: torch.clamp(x, low, high)


def project_simplex(v: Tensor) -> Tensor:
    r"""Euclidean projection onto the simplex :math:`\Delta_n = \{x \ge 0, \sum x = 1\}` (sort-based:
    :math:`x = (v - \theta)_+` with the threshold :math:`\theta` from the sorted cumulative sums)."""
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1
    k = torch.arange(1, v.numel() + 1, dtype=v.dtype)
    rho = int(torch.nonzero(u - css / k > 0).max())
    theta = css[rho] / (rho + 1)
    return torch.clamp(v - theta, min=0.0)


def project_nonneg_ball(radius: float) -> Callable[[Tensor], Tensor]:
    r"""Projection onto :math:`\{y \ge 0, \|y\|_2 \le r\}`: clamp at 0, then scale into the ball (exact for a
    ball centred at the origin)."""
    ball = project_ball(radius)
    return lambda y: ball(torch.clamp(y, min=0.0))
