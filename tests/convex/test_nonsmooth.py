"""Subgradient descent, the ellipsoid method and the 2-D center of gravity method (Bubeck 2015, Ch. 2-3)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from memopt.convex import center_of_gravity_2d, ellipsoid, project_ball, strongly_convex_steps, subgradient_descent
from memopt.convex.cutting_plane import ellipsoid_update
from memopt.harness.problems.convex import l1_regression


def test_subgradient_descent_meets_theorem_3_2_and_reaches_the_optimum():
    p = l1_regression(n=60, dim=10, seed=0)
    R = 1.5 * float(p.minimizer.norm())  # X = ball of radius R around x_1 = 0
    L = p.lipschitz_2
    x0 = torch.zeros(10, dtype=torch.float64)
    for t in (100, 1000, 4000):
        r = subgradient_descent(p.l1_subgrad, x0, step=R / (L * math.sqrt(t)), n_steps=t, project=project_ball(R),
                                monitor=p.l1_value)
        assert r.history.values[-1] - p.f_star <= R * L / math.sqrt(t)
    assert r.history.values[-1] < 0.05 and r.history.extra["best"][-1] < 0.05


def test_strongly_convex_steps_with_linear_averaging_meet_theorem_3_9():
    # f(x) = ||x - c||_1 / n + alpha/2 ||x||^2 : alpha-strongly convex, minimizer soft-threshold of c
    g = torch.Generator().manual_seed(0)
    n, alpha = 10, 0.5
    c = torch.randn(n, generator=g, dtype=torch.float64)
    x_star = torch.clamp(c, -1 / (n * alpha), 1 / (n * alpha))

    def f(x):
        return float((x - c).abs().sum() / n + alpha / 2 * x @ x)

    def sub(x):
        return torch.sign(x - c) / n + alpha * x

    R = 2 * float(c.norm())
    L = 1 / math.sqrt(n) + alpha * R
    r = subgradient_descent(sub, torch.zeros(n, dtype=torch.float64), step=strongly_convex_steps(alpha),
                            n_steps=2000, project=project_ball(R), average="linear", monitor=f)
    f_star = f(x_star)
    for t in (10, 100, 2000):
        assert r.history.values[t] - f_star <= 2 * L**2 / (alpha * (t + 1))
    assert float((r.x - x_star).norm()) < 1e-2


def test_ellipsoid_update_shrinks_the_volume_exactly_as_lemma_2_3():
    n = 5
    g = torch.Generator().manual_seed(0)
    c, H = torch.zeros(n, dtype=torch.float64), torch.eye(n, dtype=torch.float64)
    w = torch.randn(n, generator=g, dtype=torch.float64)
    _, H1 = ellipsoid_update(c, H, w)
    ratio = float(torch.linalg.det(H1) / torch.linalg.det(H))
    assert ratio == pytest.approx((n * n / (n * n - 1)) ** n * (n - 1) / (n + 1), rel=1e-12)
    assert math.sqrt(ratio) <= math.exp(-1 / (2 * n))


def test_ellipsoid_method_on_a_box_reaches_the_optimum_at_theorem_2_4_rate():
    p = l1_regression(n=30, dim=4, seed=1)
    box = 3.0
    assert float(p.minimizer.abs().max()) < box

    def separation(x):
        i = int(torch.argmax(x.abs()))
        if float(x[i].abs()) <= box:
            return None
        w = torch.zeros_like(x)
        w[i] = torch.sign(x[i])
        return w

    radius = box * math.sqrt(4)
    r = ellipsoid(p.l1_value, p.l1_subgrad, center=torch.zeros(4, dtype=torch.float64), radius=radius,
                  n_steps=600, separation=separation)
    assert r.history.values[-1] - p.f_star < 1e-6
    assert float((r.x - p.minimizer).norm()) < 1e-5
    logvol = r.history.extra["log_volume"]
    assert all(b - a <= -1 / (2 * 4) + 1e-9 for a, b in itertools.pairwise(logvol))


def test_center_of_gravity_in_2d_reaches_the_optimum_and_cuts_at_least_1_over_e():
    p = l1_regression(n=20, dim=2, seed=2)
    square = torch.tensor([[-3.0, -3.0], [3.0, -3.0], [3.0, 3.0], [-3.0, 3.0]], dtype=torch.float64)
    r = center_of_gravity_2d(p.l1_value, p.l1_subgrad, vertices=square, n_steps=60)
    assert r.history.values[-1] - p.f_star < 1e-6
    area = r.history.extra["area"]
    # Grünbaum: a cut through the centroid keeps at most 1 - (n/(n+1))^n = 5/9 <= 1 - 1/e (n = 2), checked
    # while the polygon is well above float64 round-off
    assert all(b / a <= 5 / 9 + 1e-6 for a, b in itertools.pairwise(area) if a > 1e-8 * area[0])
    assert 5 / 9 <= 1 - 1 / math.e


def test_bad_input():
    p = l1_regression(n=20, dim=2, seed=2)
    with pytest.raises(ValueError, match="vertices"):
        center_of_gravity_2d(p.l1_value, p.l1_subgrad, vertices=torch.zeros(4, 3), n_steps=5)
    with pytest.raises(ValueError, match="radius"):
        ellipsoid(p.l1_value, p.l1_subgrad, center=torch.zeros(2, dtype=torch.float64), radius=-1.0, n_steps=5)
    with pytest.raises(ValueError, match="average"):
        subgradient_descent(p.l1_subgrad, torch.zeros(2, dtype=torch.float64), step=0.1, n_steps=5, average="best")
