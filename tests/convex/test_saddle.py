"""Saddle-point solvers: closed-form saddles, ALPD vs LPD gradient complexity, inexact ALPD (arXiv 2209.04604)."""

from __future__ import annotations

import itertools

import pytest
import torch

from memopt.convex import alpd, extragradient, gradient_descent_ascent, inexact_alpd, loglog_slope, lpd
from memopt.convex.saddle import SaddleOracles, alpd_schedule
from memopt.harness.problems.saddle import (
    bilinear_saddle,
    power_law_saddle,
    quadratic_constraint_problem,
    quadratic_saddle,
)


def test_every_solver_reaches_the_closed_form_saddle_point():
    p = quadratic_saddle(n=20, m=10)
    o = p.oracles()
    x_star, y_star = p.unconstrained_saddle()
    assert p.gap(x_star, y_star) == pytest.approx(0.0, abs=1e-12)
    x0, y0 = torch.zeros(20, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    step = 1 / (p.L_f + o.L_xy + o.mu_g)
    runs = {
        "alpd": alpd(o, x0, y0, n_steps=1000, gap=p.gap),
        "alpd_prox_g": alpd(o, x0, y0, n_steps=1000, prox_g=True, gap=p.gap),
        "lpd": lpd(o, x0, y0, n_steps=1000, gap=p.gap),
        "extragradient": extragradient(o, x0, y0, step=step, n_steps=1000, gap=p.gap),
        "gda": gradient_descent_ascent(o, x0, y0, step_x=step, step_y=step, n_steps=1000, gap=p.gap),
    }
    for name, r in runs.items():
        # the averaged extragradient output converges at O(1/t) only (Theorem 5.2)
        tol, gap_tol = (2e-2, 1e-3) if name == "extragradient" else (1e-3, 1e-5)
        assert float((r.x - x_star).norm()) < tol, name
        assert float((r.y - y_star).norm()) < tol, name
        assert 0 <= r.history.values[-1] < gap_tol, name
    assert runs["gda"].history.values[-1] < 1e-10  # strongly monotone here: GDA's last iterate is linear


def test_gda_diverges_on_a_bilinear_problem_and_extragradient_converges():
    p = bilinear_saddle(n=10)
    o = p.oracles()
    x0, y0 = torch.zeros(10, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    start = p.distance(x0, y0)
    gda = gradient_descent_ascent(o, x0, y0, step_x=0.2, step_y=0.2, n_steps=300)
    eg = extragradient(o, x0, y0, step=0.5, n_steps=300)
    assert p.distance(gda.x, gda.y) > 2 * start
    assert p.distance(eg.x, eg.y) < 0.05 * start


def test_alpd_step_sizes_satisfy_the_papers_conditions_and_proposition_4_5():
    o = quadratic_saddle().oracles()
    beta, theta, eta, tau = alpd_schedule(o, 200)
    for t in range(1, 200):
        assert (t + 2) / 2 - 1e-12 <= beta[t + 1] <= t + 1 + 1e-12 or t == 1  # Prop. 4.5 (not at t=1, c > 1/2)
        # condition (9): 1/(2 eta_t) - L_f/(2 beta_t) - 2 L_xy^2 tau_t >= L_xx/2 and 1/(4 tau_t) - L_g/2 >= 0
        assert 1 / (2 * eta[t]) - o.L_f / (2 * beta[t]) - 2 * o.L_xy**2 * tau[t] >= o.L_xx / 2 - 1e-12
        assert 1 / (4 * tau[t]) - o.L_g / 2 - 2 * o.L_yy**2 * tau[t] >= -1e-12
        if t >= 2:
            assert 0 <= theta[t] <= tau[t - 1] / tau[t] + 1e-12


@pytest.fixture(scope="module")
def scaling():
    values = (10.0, 30.0, 100.0, 300.0)
    eps = 0.3
    counts = {"alpd": [], "lpd": []}
    for L_f in values:
        p = power_law_saddle(L_f, n=100, m=20)
        o = p.oracles()
        x0, y0 = torch.zeros(100, dtype=torch.float64), torch.zeros(20, dtype=torch.float64)
        for name, solver in (("alpd", alpd), ("lpd", lpd)):
            r = solver(o, x0, y0, n_steps=20_000, gap=p.gap, tol=eps)
            assert r.history.values[-1] <= eps
            counts[name].append(r.history.oracle_calls[-1])
    return values, counts


def test_alpd_needs_fewer_gradients_than_lpd_and_the_advantage_grows_with_L_f(scaling):
    values, counts = scaling
    ratios = [b / a for a, b in zip(counts["alpd"], counts["lpd"])]
    assert all(a < b for a, b in zip(counts["alpd"], counts["lpd"])), counts
    assert all(r2 > r1 for r1, r2 in itertools.pairwise(ratios)), ratios
    # Theorems 3.2 and 4.4: K_LPD ~ L_f / eps, K_ALPD ~ sqrt(L_f / eps)
    slope_alpd, slope_lpd = loglog_slope(values, counts["alpd"]), loglog_slope(values, counts["lpd"])
    assert abs(slope_lpd - 1.0) <= 0.15, slope_lpd
    assert abs(slope_alpd - 0.5) <= 0.15, slope_alpd


def test_inexact_alpd_on_quadratic_constraints_uses_fewer_gradients_of_f_than_alpd():
    p = quadratic_constraint_problem(n=30, m=5, L_f=50.0, L_a=10.0)
    o = p.oracles()
    assert o.L_xx > 0
    x0, y0 = torch.zeros(30, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    eps = 0.05
    exact = alpd(o, x0, y0, n_steps=5000, gap=p.gap, tol=eps)  # Theorem 4.7 step sizes
    inexact = inexact_alpd(o, x0, y0, n_steps=5000, gap=p.gap, tol=eps)
    assert exact.history.values[-1] <= eps and inexact.history.values[-1] <= eps
    assert inexact.history.oracle_calls[-1] < exact.history.oracle_calls[-1]
    assert inexact.history.extra["grad_x_phi"][-1] > inexact.history.oracle_calls[-1]  # the inner loop's cost


def test_bad_input():
    with pytest.raises(ValueError, match="grad_g"):
        SaddleOracles(grad_f=lambda x: x, grad_x_phi=lambda x, y: x, grad_y_phi=lambda x, y: y)
    with pytest.raises(ValueError, match="L_f"):
        SaddleOracles(grad_f=lambda x: x, grad_x_phi=lambda x, y: x, grad_y_phi=lambda x, y: y,
                      grad_g=lambda y: y, L_f=-1.0)
    o = bilinear_saddle(4).oracles()  # mu_g = 0
    z = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="mu_g"):
        alpd(o, z, z, n_steps=5)
    with pytest.raises(ValueError, match="y0 must be a 1-D"):
        extragradient(o, z, torch.zeros(2, 2), step=0.1, n_steps=5)
