"""Test problems: their stated structure (spectrum, minimiser, gamma, smoothness, split) holds."""

from __future__ import annotations

import math

import pytest
import torch

from memopt.harness.problems import (
    bump,
    bump_problem,
    logistic_regression,
    modular_arithmetic,
    noisy_nonconvex_sum,
    power_law_stream,
    sine_problem,
    sine_quadratic,
    worst_case_quadratic,
)
from memopt.harness.problems.quadratic import Quadratic
from memopt.harness.problems.quasar import log_spaced, quasar_constant, smoothness


def test_quadratic_with_a_spectrum():
    eigenvalues = torch.tensor([0.1, 0.5, 2.0, 3.0], dtype=torch.float64)
    q = Quadratic.with_spectrum(eigenvalues, seed=1)
    torch.testing.assert_close(torch.linalg.eigvalsh(q.A), eigenvalues)
    torch.testing.assert_close(q.grad(q.minimizer), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (q.mu, q.L) == (0.1, 3.0)
    assert float(q.value(q.minimizer)) == pytest.approx(q.f_star)
    assert float(q.value(q.minimizer + 0.1)) > q.f_star


def test_worst_case_quadratic():
    n = 50
    q = worst_case_quadratic(n, L=2.0)
    torch.testing.assert_close(q.minimizer, 1 - torch.arange(1, n + 1, dtype=torch.float64) / (n + 1))
    assert 0 < q.mu and q.L < 2.0
    assert q.f_star == pytest.approx(2.0 / 8 * (-1 + 1 / (n + 1)), rel=1e-10)


@pytest.mark.parametrize("gamma", [1.0, 0.5, 0.1])
def test_bump_profile_is_exactly_gamma_quasar_convex_and_two_smooth(gamma):
    assert quasar_constant(lambda z: bump(z, gamma)) == pytest.approx(gamma, abs=1e-6)
    assert smoothness(lambda z: bump(z, gamma)) == pytest.approx(2.0, rel=1e-6)
    z = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    (dh,) = torch.autograd.grad(bump(z, gamma).sum(), z)
    assert float(z.detach() * dh / bump(z.detach(), gamma)) == pytest.approx(gamma, rel=1e-12)  # attained at |z| = 1


def test_small_gamma_bump_is_nonconvex():
    z = torch.linspace(0.5, 2, 200, dtype=torch.float64, requires_grad=True)
    (dh,) = torch.autograd.grad(bump(z, 0.1).sum(), z, create_graph=True)
    (d2h,) = torch.autograd.grad(dh.sum(), z)
    assert float(d2h.min()) < 0


def test_sine_quadratic_constants():
    assert quasar_constant(sine_quadratic) == pytest.approx(0.4961, abs=2e-4)
    assert smoothness(sine_quadratic) == pytest.approx(8.0, rel=1e-6)
    z = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    assert float((2 + 6 * torch.cos(2 * z)).min()) == pytest.approx(-4.0, abs=1e-4)  # h'' = 2 + 6 cos 2z


@pytest.mark.parametrize("make", [lambda w, c: bump_problem(0.3, w, c), sine_problem])
def test_separable_sums_satisfy_the_quasar_inequality_tightly(make):
    g = torch.Generator().manual_seed(0)
    weights, center = log_spaced(8, 1e-2, 1.0), torch.randn(8, generator=g, dtype=torch.float64)
    problem = make(weights, center)
    worst = math.inf
    for _ in range(200):
        x = center + 4 * torch.randn(8, generator=g, dtype=torch.float64)
        # f* >= f(x) + <grad f(x), x* - x> / gamma  <=>  <grad f(x), x - x*> >= gamma (f(x) - f*)
        ratio = float(problem.grad(x) @ (x - center)) / float(problem.value(x))
        worst = min(worst, ratio)
    assert worst >= problem.gamma - 1e-9
    assert problem.f_star == 0.0 and float(problem.value(center)) == 0.0


def test_logistic_regression_smoothness_bound_and_gradient():
    p = logistic_regression(n=200, dim=6, reg=0.01, seed=0)
    w = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hessian = torch.autograd.functional.hessian(lambda v: p.value(v), w)
    eigs = torch.linalg.eigvalsh(hessian)
    assert float(eigs.max()) <= p.L + 1e-12 and float(eigs.min()) >= p.mu - 1e-12
    e = torch.zeros(6, dtype=torch.float64)
    e[2] = 1e-6
    assert float((p.value(w + e) - p.value(w - e)) / 2e-6) == pytest.approx(float(p.grad(w)[2]), rel=1e-5)


def test_noisy_nonconvex_sum():
    p = noisy_nonconvex_sum(n=300, dim=5, seed=0)
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(p.loss(leaf, torch.arange(300)), leaf)  # all samples as one minibatch
    torch.testing.assert_close(p.full_grad(x), g)
    a = p.sample(4, torch.Generator().manual_seed(3))
    b = p.sample(4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (4,)
    hessian = torch.autograd.functional.hessian(lambda v: p.loss(v), torch.full((5,), 3.0, dtype=torch.float64))
    assert float(torch.linalg.eigvalsh(hessian).min()) < 0  # non-convex


def test_least_squares_excess_risk_is_the_population_risk_gap():
    stream = power_law_stream(10, 1.0, sigma=0.3)
    w = torch.linspace(-1, 1, 10, dtype=torch.float64)
    x, y = stream.sample(200_000, torch.Generator().manual_seed(0))
    monte_carlo = float(((x @ w - y) ** 2).mean() / 2 - ((x @ stream.w_star - y) ** 2).mean() / 2)
    assert stream.excess_risk(w) == pytest.approx(monte_carlo, rel=0.02)
    head = torch.arange(10) < 3
    assert stream.excess_risk(w, head) + stream.excess_risk(w, ~head) == pytest.approx(stream.excess_risk(w))


def test_modular_arithmetic_split():
    split = modular_arithmetic(97, "mul", 0.5, seed=0)
    assert len(split.train_labels) == len(split.val_labels) == 97 * 96 // 2
    for inputs, labels in ((split.train_inputs, split.train_labels), (split.val_inputs, split.val_labels)):
        assert torch.equal(labels, (inputs[:, 0] * inputs[:, 1]) % 97)
        assert int(inputs[:, 1].min()) == 1
    pairs = {tuple(r) for r in split.train_inputs.tolist()}
    assert not pairs & {tuple(r) for r in split.val_inputs.tolist()}
    assert torch.equal(modular_arithmetic(seed=0).train_inputs, split.train_inputs)
    assert not torch.equal(modular_arithmetic(seed=1).train_inputs, split.train_inputs)
    with pytest.raises(ValueError, match="Unknown operation"):
        modular_arithmetic(op="div")
