"""Quasar-convex AGD: Nesterov as its gamma = 1 case, eps^-1/2 and 1/gamma scaling, the line search, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch

from memopt.accelerated.quasar_agd import NesterovAGD, QuasarAGD, binary_line_search, next_omega
from memopt.harness.experiments.common import loglog_slope
from memopt.harness.experiments.quasar import agd_evaluations, gd_evaluations, log_spaced_quadratic
from memopt.harness.problems.quadratic import Quadratic
from memopt.harness.problems.quasar import bump_problem, log_spaced, sine_problem


@pytest.fixture(scope="module")
def convex_quadratic() -> Quadratic:
    return Quadratic.with_spectrum(torch.logspace(-3, 0, 30, dtype=torch.float64), seed=0)


def trajectory(problem, make, steps: int, x0: torch.Tensor | None = None):
    x = (torch.zeros(problem.dim, dtype=torch.float64) if x0 is None else x0.clone()).requires_grad_()
    optimizer = make([x])
    calls = 0

    def closure():
        nonlocal calls
        calls += 1
        optimizer.zero_grad()
        loss = problem.value(x)
        loss.backward()
        return loss

    out, how = [], []
    for _ in range(steps):
        optimizer.step(closure)
        out.append(x.detach().clone())
        how.append(optimizer.last_search.how)
    return torch.stack(out), calls, how


@pytest.mark.parametrize("mu", [0.0, 1e-3])
def test_gamma_one_on_a_convex_quadratic_is_nesterov_with_every_guess_accepted(convex_quadratic, mu):
    ours, calls, how = trajectory(convex_quadratic, lambda p: QuasarAGD(p, lr=1.0, gamma=1.0, mu=mu), 150)
    nesterov, nesterov_calls, _ = trajectory(convex_quadratic, lambda p: NesterovAGD(p, lr=1.0, mu=mu), 150)
    assert torch.equal(ours, nesterov)
    assert set(how[1:]) == {"guess"} and how[0] == "trivial"  # x0 = v0 on the first step
    assert nesterov_calls == 150 and calls == 2 * 150 - 1


def test_nesterov_is_the_momentum_form_with_the_omega_sequence(convex_quadratic):
    """y_k = x_k + omega_{k+1} (1/omega_k - 1)(x_k - x_{k-1}), x_{k+1} = y_k - grad f(y_k)/L (FISTA's
    (t_k - 1)/t_{k+1} with t_k = 1/omega_k): an independent algebraic form."""
    ours, _, _ = trajectory(convex_quadratic, lambda p: NesterovAGD(p, lr=1.0), 200)
    x = x_prev = torch.zeros(convex_quadratic.dim, dtype=torch.float64)
    t, expected = 1.0, []
    for _ in range(200):
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = x + ((t - 1) / t_next) * (x - x_prev)
        x, x_prev = y - convex_quadratic.grad(y), x
        t = t_next
        expected.append(x)
    torch.testing.assert_close(ours, torch.stack(expected), rtol=1e-10, atol=1e-10)
    assert 1 / next_omega(1.0) == pytest.approx((1 + math.sqrt(5)) / 2)


def test_strongly_convex_nesterov_is_constant_momentum(convex_quadratic):
    mu = convex_quadratic.mu
    ours, _, _ = trajectory(convex_quadratic, lambda p: NesterovAGD(p, lr=1.0, mu=mu), 200)
    q = (math.sqrt(1 / mu) - 1) / (math.sqrt(1 / mu) + 1)
    x = x_prev = torch.zeros(convex_quadratic.dim, dtype=torch.float64)
    expected = []
    for _ in range(200):
        y = x + q * (x - x_prev)
        x, x_prev = y - convex_quadratic.grad(y), x
        expected.append(x)
    torch.testing.assert_close(ours, torch.stack(expected), rtol=1e-10, atol=1e-10)


def test_evaluations_scale_like_eps_to_the_minus_half_and_gradient_descent_like_eps_to_the_minus_one():
    value, _, _ = log_spaced_quadratic(200)
    x0 = torch.zeros(200, dtype=torch.float64)
    targets = [10 ** (-k / 4) for k in range(4, 17)]  # 1e-1 .. 1e-4
    agd, _ = agd_evaluations(value, x0, 0.0, targets, 10_000, lr=1.0, gamma=1.0)
    slope = loglog_slope(targets, [agd[e] for e in targets])
    assert -0.6 <= slope <= -0.4
    gd_targets = targets[:9]  # down to 1e-3
    gd = gd_evaluations(value, x0, 0.0, gd_targets, 1.0, 10_000)
    assert -1.1 <= loglog_slope(gd_targets, [gd[e] for e in gd_targets]) <= -0.9


def test_evaluations_grow_like_one_over_gamma_on_exactly_gamma_quasar_convex_sums():
    _, lam, center = log_spaced_quadratic(200)
    x0 = torch.zeros(200, dtype=torch.float64)
    gammas = [1.0, 0.5, 0.25, 0.125]
    counts = []
    for gamma in gammas:
        problem = bump_problem(gamma, lam / 2, center)
        hits, _ = agd_evaluations(problem.value, x0, 0.0, [1e-2], 20_000, lr=1 / problem.L, gamma=gamma)
        counts.append(hits[1e-2])
    assert counts == sorted(counts)
    assert 0.8 <= loglog_slope([1 / g for g in gammas], counts) <= 1.5


def test_accelerates_on_the_nonconvex_sine_quadratic():
    problem = sine_problem(log_spaced(20, 1e-3, 1.0), torch.zeros(20, dtype=torch.float64))
    x0 = torch.rand(20, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 12 - 6
    iterates, _, how = trajectory(problem, lambda p: QuasarAGD(p, lr=1 / problem.L, gamma=problem.gamma), 500, x0)
    y = x0.clone()
    for _ in range(500):
        y = y - problem.grad(y) / problem.L
    assert float(problem.value(iterates[-1])) < 1e-4 < 1e-2 < float(problem.value(y))
    assert "bisection" in how  # the non-convexity does reject guesses


@pytest.mark.parametrize("seed", range(20))
def test_the_line_search_returns_a_point_that_satisfies_its_condition(seed):
    g = torch.Generator().manual_seed(seed)
    problem = sine_problem(log_spaced(10, 1e-2, 1.0), torch.zeros(10, dtype=torch.float64))
    x = torch.randn(10, generator=g, dtype=torch.float64) * 3
    v = torch.randn(10, generator=g, dtype=torch.float64) * 3
    c = float(torch.rand((), generator=g)) * 20
    b = float(torch.rand((), generator=g)) * 0.1

    def phi(a: float) -> tuple[float, float]:
        point = a * x + (1 - a) * v
        return float(problem.value(point)), float(problem.grad(point) @ (x - v))

    result = binary_line_search(phi, dist2=float((x - v) @ (x - v)), L=problem.L, b=b, c=c, eps=0.0, guess=c / (1 + c))
    assert result.how != "capped"
    ga, dga = phi(result.alpha)
    p = b * float((x - v) @ (x - v))
    assert c * ga + result.alpha * (dga - result.alpha * p) <= c * phi(1.0)[0] + 1e-9 * (1 + abs(phi(1.0)[0]))
    assert 0 <= result.alpha <= 1


def test_needs_a_closure_and_one_group():
    w = torch.zeros(2, requires_grad=True)
    optimizer = QuasarAGD([w])
    assert optimizer.needs_closure
    with pytest.raises(ValueError, match="needs a closure"):
        optimizer.step()
    with pytest.raises(ValueError, match="single parameter group"):
        QuasarAGD([{"params": [w]}, {"params": [torch.zeros(1, requires_grad=True)]}])
    with pytest.raises(ValueError, match=r"Invalid gamma: 1\.5\. gamma is the quasar-convexity constant"):
        QuasarAGD([w], gamma=1.5)
    with pytest.raises(ValueError, match=r"Invalid mu: 20\.0 with lr = 0\.1"):
        QuasarAGD([w], lr=0.1, mu=20.0)
    with pytest.raises(ValueError, match=r"Invalid lr: 0"):
        NesterovAGD([w], lr=0)


@pytest.mark.parametrize("nesterov", [False, True], ids=["quasar_agd", "nesterov_agd"])
def test_save_load_continue_is_bit_identical(nesterov):
    problem = sine_problem(log_spaced(6, 1e-2, 1.0), torch.zeros(6, dtype=torch.float64))
    x0 = torch.linspace(-3, 3, 6, dtype=torch.float64)
    if nesterov:
        make = lambda p: NesterovAGD(p, lr=1 / problem.L, mu=1e-3)
    else:
        make = lambda p: QuasarAGD(p, lr=1 / problem.L, gamma=problem.gamma)
    straight, _, _ = trajectory(problem, make, 30, x0)
    x = x0.clone().requires_grad_()
    optimizer = make([x])

    def closure():
        optimizer.zero_grad()
        loss = problem.value(x)
        loss.backward()
        return loss

    for _ in range(12):
        optimizer.step(closure)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    resumed, _, _ = trajectory(problem, lambda p: _loaded(make(p), buffer), 18, x.detach())
    assert torch.equal(resumed[-1], straight[-1])


def _loaded(optimizer, buffer):
    optimizer.load_state_dict(torch.load(buffer, weights_only=True))
    return optimizer
