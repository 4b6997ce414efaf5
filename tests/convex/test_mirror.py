"""Mirror descent, dual averaging, mirror prox and Frank-Wolfe (Bubeck 2015, Ch. 3.3, 4, 5.2)."""

from __future__ import annotations

import math

import pytest
import torch

from memopt.convex import (
    EntropySimplex,
    EuclideanMap,
    ProductMap,
    dual_averaging,
    frank_wolfe,
    gradient_descent,
    loglog_slope,
    mirror_descent,
    mirror_prox,
    project_simplex,
    simplex_lmo,
)
from memopt.harness.problems.convex import l1_regression, simplex_center_quadratic, simplex_least_squares


def test_entropic_mirror_descent_and_dual_averaging_meet_theorems_4_2_and_4_3():
    p = l1_regression(n=60, dim=20, seed=0, on_simplex=True)
    mirror = EntropySimplex(20)
    R, L = math.sqrt(mirror.radius_squared()), p.lipschitz_inf
    for t in (100, 1000):
        md = mirror_descent(p.l1_subgrad, mirror, step=R / L * math.sqrt(2 / t), n_steps=t, monitor=p.l1_value)
        da = dual_averaging(p.l1_subgrad, mirror, step=R / L * math.sqrt(1 / (2 * t)), n_steps=t, monitor=p.l1_value)
        assert md.history.values[-1] - p.f_star <= R * L * math.sqrt(2 / t)
        assert da.history.values[-1] - p.f_star <= 2 * R * L * math.sqrt(2 / t)
        assert abs(float(md.x.sum()) - 1) < 1e-12 and float(md.x.min()) > 0
    assert md.history.values[-1] < 0.05


def test_entropy_step_is_the_multiplicative_update():
    m = EntropySimplex(4)
    x = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    g = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    expected = x * torch.exp(-0.3 * g)
    assert torch.allclose(m.step(x, g, 0.3), expected / expected.sum(), atol=1e-15)


def test_mirror_prox_on_a_matrix_game_meets_theorem_5_2():
    g = torch.Generator().manual_seed(0)
    n, m = 8, 6
    A = torch.rand(n, m, generator=g, dtype=torch.float64) * 2 - 1
    maps = ProductMap([EntropySimplex(n), EntropySimplex(m)], [n, m],
                      weights=[1 / math.log(n), 1 / math.log(m)])  # a = 1/R_X^2, b = 1/R_Y^2

    def field(z):
        x, y = z[:n], z[n:]
        return torch.cat([A @ y, -(A.T @ x)])

    def gap(z):
        x, y = z[:n], z[n:]
        return float((A.T @ x).max() - (A @ y).min())

    M = float(A.abs().max()) * math.sqrt(math.log(n) * math.log(m))
    r = mirror_prox(field, maps, step=1 / (2 * M), n_steps=500, monitor=gap)
    for t in (10, 100, 500):
        assert 0 <= r.history.values[t] <= 4 * M / t
    assert r.history.values[-1] < 1e-2


def test_mirror_prox_euclidean_minimizes_a_smooth_function_at_theorem_4_4_rate():
    p = simplex_least_squares()
    mirror = EuclideanMap(torch.full((30,), 1 / 30, dtype=torch.float64), project=project_simplex,
                          radius=math.sqrt(2))
    r = mirror_prox(p.grad, mirror, step=1 / p.beta, n_steps=300, monitor=p.value)
    R2 = 0.5 * float((mirror.initial() - p.minimizer).norm()) ** 2 * 2  # ||x_1 - x*||^2 bounds 2 D_Phi
    for t in (10, 100, 300):
        assert r.history.values[t] <= p.beta * max(R2, 1.0) / t


def test_frank_wolfe_meets_theorem_3_8_with_a_certificate():
    p = simplex_least_squares()
    x0 = torch.zeros(30, dtype=torch.float64)
    x0[0] = 1.0
    r = frank_wolfe(p.grad, simplex_lmo, x0, n_steps=3000, monitor=p.value)
    v = r.history.values
    # l1 smoothness and l1 diameter 2 (Theorem 3.8 holds for any norm)
    assert all(v[t] <= 2 * p.beta_l1 * 4 / (t + 1) for t in range(2, 3001))
    assert all(gap >= v[t] - 1e-12 for t, gap in enumerate(r.history.extra["frank_wolfe_gap"]))
    assert v[-1] < 1e-6
    # here the optimum lies inside a face and f is strongly convex on it: open-loop FW is faster than 1/t
    # (measured slope about -1.9; Wirth, Kerdreux & Pokutta 2023), which the worst case 1/t allows


def test_frank_wolfe_slope_is_minus_one_on_its_hard_instance():
    p = simplex_center_quadratic(10_000)
    x0 = torch.zeros(10_000, dtype=torch.float64)
    x0[0] = 1.0
    r = frank_wolfe(p.grad, simplex_lmo, x0, n_steps=1000, monitor=p.value)
    v = r.history.values
    assert all(v[t] >= 0.5 * (1 / (t + 1) - 1 / 10_000) - 1e-12 for t in range(1, 1001))  # Jaggi's lower bound
    assert all(v[t] <= 2 * p.beta * 2 / (t + 1) for t in range(2, 1001))  # Theorem 3.8, R^2 = diam^2 = 2
    slope = loglog_slope(range(len(v)), v, 10, 1000)
    assert abs(slope + 1) <= 0.1, slope


def test_projected_gd_on_the_simplex_agrees_with_frank_wolfe_optimum():
    p = simplex_least_squares()
    r = gradient_descent(p.grad, torch.full((30,), 1 / 30, dtype=torch.float64), step=1 / p.beta, n_steps=5000,
                         project=project_simplex, monitor=p.value)
    assert r.history.values[-1] < 1e-12
    assert float((r.x - p.minimizer).norm()) < 1e-5


def test_bad_input():
    with pytest.raises(ValueError, match="n must be"):
        EntropySimplex(1)
    with pytest.raises(ValueError, match="weights"):
        ProductMap([EntropySimplex(2), EntropySimplex(2)], [2, 2], weights=[1.0, -1.0])
