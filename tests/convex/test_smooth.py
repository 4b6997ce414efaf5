"""GD and Nesterov's AGD: known optima, fitted sublinear slopes, linear contraction factors (Bubeck 2015, Ch. 3)."""

from __future__ import annotations

import math

import pytest
import torch

from memopt.convex import (
    contraction,
    gradient_descent,
    loglog_slope,
    nesterov_agd,
    nesterov_agd_strongly_convex,
    project_ball,
    rate_exponent_ratio,
)
from memopt.harness.problems.convex import ill_conditioned_quadratic, logistic, power_law_quadratic


def test_gd_and_agd_reach_the_logistic_optimum():
    p = logistic()
    x0 = torch.zeros(10, dtype=torch.float64)
    gd = gradient_descent(p.grad, x0, step=1 / p.beta, n_steps=3000, monitor=p.value)
    agd = nesterov_agd(p.grad, x0, beta=p.beta, n_steps=400, monitor=p.value)
    sc = nesterov_agd_strongly_convex(p.grad, x0, alpha=p.alpha, beta=p.beta, n_steps=400, monitor=p.value)
    for result in (gd, agd, sc):
        assert result.history.values[-1] - p.f_star < 1e-10
        assert float((result.x - p.minimizer).norm()) < 1e-4
    # Theorem 3.3 and 3.19 bounds hold at every step
    d2 = float(p.minimizer.norm()) ** 2
    for t in range(2, 400):
        assert gd.history.values[t] - p.f_star <= 2 * p.beta * d2 / (t - 1) + 1e-12
        assert agd.history.values[t] - p.f_star <= 2 * p.beta * d2 / t**2 + 1e-12


@pytest.fixture(scope="module")
def power_law():
    p = power_law_quadratic()
    x0 = torch.zeros_like(p.minimizer)
    gd = gradient_descent(p.grad, x0, step=1 / p.beta, n_steps=2000, monitor=p.value)
    agd = nesterov_agd(p.grad, x0, beta=p.beta, n_steps=2000, monitor=p.value)
    return p, gd, agd


def test_fitted_slopes_match_the_sublinear_rates(power_law):
    p, gd, agd = power_law
    t = range(len(gd.history.values))
    gd_slope = loglog_slope(t, gd.history.gaps(p.f_star), 10, 2000)
    agd_slope = loglog_slope(t, agd.history.gaps(p.f_star), 10, 2000)
    assert abs(gd_slope - (-1)) <= 0.1, gd_slope
    assert abs(agd_slope - (-2)) <= 0.2, agd_slope
    # and they sit below the theorems' bounds
    d2 = float(p.minimizer.norm()) ** 2
    assert all(g <= 2 * p.beta * d2 / (k - 1) for k, g in enumerate(gd.history.values) if k >= 2)
    assert all(g <= 2 * p.beta * d2 / k**2 for k, g in enumerate(agd.history.values) if k >= 1)


def _distances(result, minimizer):
    return [float((x - minimizer).norm()) for x in result.history.iterates]


@pytest.mark.parametrize(
    ("method", "predicted"),
    [
        ("gd_2_over_a_plus_b", lambda k: (k - 1) / (k + 1)),  # Theorem 3.12 (proof)
        ("gd_1_over_b", lambda k: 1 - 1 / k),  # max |1 - lambda/beta| on the spectrum
        ("agd_strongly_convex", lambda k: 1 - 1 / math.sqrt(k)),  # Theorem 3.18 (proof)
    ],
)
def test_linear_rates_match_the_predicted_contraction_within_10_percent(method, predicted):
    p = ill_conditioned_quadratic(dim=50, alpha=0.01, beta=1.0)
    x0 = torch.zeros(50, dtype=torch.float64)
    if method == "gd_2_over_a_plus_b":
        r = gradient_descent(p.grad, x0, step=2 / (p.alpha + p.beta), n_steps=600, keep_iterates=True)
    elif method == "gd_1_over_b":
        r = gradient_descent(p.grad, x0, step=1 / p.beta, n_steps=2000, keep_iterates=True)
    else:
        r = nesterov_agd_strongly_convex(p.grad, x0, alpha=p.alpha, beta=p.beta, n_steps=300, keep_iterates=True)
    errors = _distances(r, p.minimizer)
    n = len(errors) - 1
    rho = contraction(errors, n // 2, n)
    expected = predicted(p.beta / p.alpha)
    assert abs(rate_exponent_ratio(rho, expected) - 1) <= 0.10, (rho, expected)
    assert abs(rho / expected - 1) <= 0.10


def test_projected_gd_stays_feasible_and_meets_theorem_3_7():
    p = ill_conditioned_quadratic(dim=20, alpha=0.1, beta=1.0, seed=1)
    radius = 0.5 * float(p.minimizer.norm())
    ball = project_ball(radius)
    x0 = torch.zeros(20, dtype=torch.float64)
    r = gradient_descent(p.grad, x0, step=1 / p.beta, n_steps=3000, project=ball, monitor=p.value,
                         keep_iterates=True)
    assert max(float(x.norm()) for x in r.history.iterates) <= radius * (1 + 1e-12)
    # the constrained optimum: the result satisfies the projected fixed-point condition
    assert float((ball(r.x - p.grad(r.x)) - r.x).norm()) < 1e-10
    f_star = r.history.values[-1]
    d2 = float((x0 - r.x).norm()) ** 2
    for t in range(1, 500):
        assert r.history.values[t] - f_star <= (3 * p.beta * d2 + r.history.values[0] - f_star) / t + 1e-12


def test_bad_input_names_the_argument():
    p = logistic()
    x0 = torch.zeros(10, dtype=torch.float64)
    with pytest.raises(ValueError, match="step"):
        gradient_descent(p.grad, x0, step=-0.1, n_steps=10)
    with pytest.raises(ValueError, match="beta"):
        nesterov_agd(p.grad, x0, beta=0.0, n_steps=10)
    with pytest.raises(ValueError, match="alpha"):
        nesterov_agd_strongly_convex(p.grad, x0, alpha=2.0, beta=1.0, n_steps=10)
    with pytest.raises(ValueError, match="x0 must be a 1-D"):
        gradient_descent(p.grad, torch.zeros(2, 5), step=0.1, n_steps=10)
    with pytest.raises(ValueError, match="n_steps"):
        gradient_descent(p.grad, x0, step=0.1, n_steps=0)
