"""Cutting-plane methods in small dimension: the ellipsoid method and the center of gravity method in 2-D
(Bubeck 2015, Ch. 2)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from memopt.convex.history import History, Result, check_positive, check_steps, check_vector

Tensor = torch.Tensor


def ellipsoid_update(center: Tensor, shape: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    r"""The minimal ellipsoid containing :math:`\{x \in \mathcal E_0 : w^\top(x - c_0) \le 0\}` (Lemma 2.3).

    :math:`c = c_0 - \frac1{n+1}\frac{H_0 w}{\sqrt{w^\top H_0 w}}`,
    :math:`H = \frac{n^2}{n^2-1}\big(H_0 - \frac2{n+1}\frac{H_0 w w^\top H_0}{w^\top H_0 w}\big)`, ``n >= 2``;
    its volume is at most :math:`e^{-1/(2n)}` times the old one.
    """
    n = center.numel()
    hw = shape @ w
    whw = float(w @ hw)
    if whw <= 0:
        raise ValueError("the cutting direction w must be nonzero (w^T H w > 0).")
    c = center - hw / ((n + 1) * math.sqrt(whw))
    h = (n * n / (n * n - 1.0)) * (shape - (2.0 / (n + 1)) * torch.outer(hw, hw) / whw)
    return c, (h + h.T) / 2


def ellipsoid(
    objective: Callable[[Tensor], float | Tensor],
    subgrad: Callable[[Tensor], Tensor],
    *,
    center: Tensor,
    radius: float,
    n_steps: int,
    separation: Callable[[Tensor], Tensor | None] | None = None,
) -> Result:
    r"""The ellipsoid method (Bubeck 2015, §2.2, Theorem 2.4).

    :math:`\mathcal E_0` = ball of radius ``radius`` around ``center`` containing :math:`\mathcal X`
    (:math:`H_0 = R^2 I`). At step ``t``: if ``separation(c_t)`` returns a vector ``w`` the centre is outside
    :math:`\mathcal X` and ``w`` separates it (:math:`\mathcal X \subset \{(x-c_t)^\top w \le 0\}`); otherwise
    :math:`w_t \in \partial f(c_t)`. Then :math:`(c_{t+1}, H_{t+1})` by :func:`ellipsoid_update`. Output:
    the best feasible centre so far. Theorem 2.4: for :math:`t \ge 2n^2\log(R/r)`,
    :math:`f(x_t) - f^* \le \frac{2BR}{r}\exp(-\frac t{2n^2})` (``f`` with values in ``[-B, B]``,
    :math:`\mathcal X` containing a ball of radius ``r``).

    ``history.values`` is the best objective value found (``inf`` until a feasible centre is seen),
    ``history.extra["log_volume"]`` is :math:`\frac12\log\det H_t` (the log-volume up to a constant).
    The run stops early if a subgradient is zero (the centre is optimal).
    """
    c = check_vector("center", center)
    if c.numel() < 2:
        raise ValueError("ellipsoid needs dimension >= 2 (in 1-D use bisection).")
    radius = check_positive("radius", radius, "Pass the radius of a ball around center that contains the set.")
    check_steps(n_steps)
    h = radius**2 * torch.eye(c.numel(), dtype=c.dtype)
    best_x, best = c.clone(), float("inf")
    history = History()
    history.record(c, 0, None, False, best=best, log_volume=0.5 * float(torch.logdet(h)))
    history.values.append(best)
    calls = 0
    for _ in range(n_steps):
        w = separation(c) if separation is not None else None
        if w is None:
            value = float(objective(c))
            if value < best:
                best, best_x = value, c.clone()
            w = subgrad(c)
            calls += 1
            if float(w.norm()) == 0.0:
                break
        c, h = ellipsoid_update(c, h, w)
        history.record(c, calls, None, False, best=best, log_volume=0.5 * float(torch.logdet(h)))
        history.values.append(best)
    return Result(best_x, history)


def clip_polygon(vertices: Tensor, w: Tensor, point: Tensor) -> Tensor:
    """The convex polygon ``vertices`` (k x 2, in order) cut by the half-plane ``{x : w^T (x - point) <= 0}``."""
    kept: list[Tensor] = []
    k = vertices.shape[0]
    side = (vertices - point) @ w
    for i in range(k):
        a, b = vertices[i], vertices[(i + 1) % k]
        sa, sb = float(side[i]), float(side[(i + 1) % k])
        if sa <= 0:
            kept.append(a)
        if (sa < 0 < sb) or (sb < 0 < sa):
            kept.append(a + (sa / (sa - sb)) * (b - a))
    if len(kept) < 3:
        raise ValueError("the cut left a degenerate polygon; the centre is (numerically) optimal.")
    return torch.stack(kept)


def polygon_centroid(vertices: Tensor) -> tuple[Tensor, float]:
    """Centroid and area of a simple polygon (shoelace formula)."""
    x, y = vertices[:, 0], vertices[:, 1]
    xn, yn = torch.roll(x, -1), torch.roll(y, -1)
    cross = x * yn - xn * y
    area = float(cross.sum()) / 2
    cx = float(((x + xn) * cross).sum()) / (6 * area)
    cy = float(((y + yn) * cross).sum()) / (6 * area)
    return torch.tensor([cx, cy], dtype=vertices.dtype), abs(area)


def center_of_gravity_2d(
    objective: Callable[[Tensor], float | Tensor],
    subgrad: Callable[[Tensor], Tensor],
    *,
    vertices: Tensor,
    n_steps: int,
) -> Result:
    r"""The center of gravity method on a convex polygon (Bubeck 2015, §2.1, Theorem 2.1), in 2-D.

    :math:`\mathcal S_1 = \mathcal X`; :math:`c_t` = centroid of :math:`\mathcal S_t` (exact, shoelace formula);
    :math:`w_t \in \partial f(c_t)`; :math:`\mathcal S_{t+1} = \mathcal S_t \cap \{(x-c_t)^\top w_t \le 0\}`.
    Output: the best centre. Theorem 2.1: :math:`f(x_t) - f^* \le 2B(1 - 1/e)^{t/n}` (``n = 2``), by
    Grünbaum's lemma (each cut keeps at most :math:`1 - 1/e` of the area).

    Computing centroids is intractable in general dimension (Bubeck's remark after Theorem 2.1); this version
    clips polygons exactly and so is limited to ``n = 2``. ``vertices`` (k x 2) lists :math:`\mathcal X`'s corners
    in order. ``history.extra["area"]`` holds the area of :math:`\mathcal S_t`. The run stops early when a
    subgradient is zero or the area falls below ``1e-13`` times the initial one (float64 round-off).
    """
    if not torch.is_tensor(vertices) or vertices.dim() != 2 or vertices.shape[1] != 2 or vertices.shape[0] < 3:
        shape = tuple(vertices.shape) if torch.is_tensor(vertices) else type(vertices).__name__
        raise ValueError(f"vertices must be a (k, 2) tensor with k >= 3 corners in order, got {shape}.")
    check_steps(n_steps)
    polygon = vertices.detach().clone()
    c, area = polygon_centroid(polygon)
    floor = 1e-13 * area
    best_x, best = c.clone(), float("inf")
    history = History()
    history.record(c, 0, None, False, area=area)
    history.values.append(best)
    for t in range(1, n_steps + 1):
        value = float(objective(c))
        if value < best:
            best, best_x = value, c.clone()
        w = subgrad(c)
        if float(w.norm()) == 0.0:
            break
        try:
            polygon = clip_polygon(polygon, w, c)
        except ValueError:
            break
        c, area = polygon_centroid(polygon)
        history.record(c, t, None, False, area=area)
        history.values.append(best)
        if area <= floor:
            break
    return Result(best_x, history)
