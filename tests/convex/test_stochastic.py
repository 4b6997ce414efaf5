"""SGD with averaging (Theorems 6.1, 6.2) and SVRG (Theorem 6.5) on logistic regression."""

from __future__ import annotations

import math

import pytest
import torch

from memopt.convex import loglog_slope, sgd, strongly_convex_steps, svrg
from memopt.harness.problems.convex import logistic


@pytest.fixture(scope="module")
def problem():
    return logistic(n=200, dim=10, reg=0.1, seed=0)


def _component_grad(p):
    n = p.A.shape[0]

    def grad(w, i):
        a, y = p.A[i], p.y[i]
        return -y * a * torch.sigmoid(-y * (a @ w)) + p.reg * w

    def stoch(w, generator):
        return grad(w, int(torch.randint(n, (1,), generator=generator)))

    return grad, stoch


def test_sgd_strongly_convex_meets_theorem_6_2_on_average_over_seeds(problem):
    p = problem
    _, stoch = _component_grad(p)
    # B^2 >= E||g||^2 on the iterates' region: bound ||a_i|| (loss gradient) + reg ||w|| (w stays small)
    B = float(p.A.norm(dim=1).max()) + p.reg * 2 * float(p.minimizer.norm() + 1)
    gaps = []
    for seed in range(3):
        r = sgd(stoch, torch.zeros(10, dtype=torch.float64), step=strongly_convex_steps(p.alpha), n_steps=1000,
                average="linear", seed=seed, monitor=p.value)
        gaps.append([v - p.f_star for v in r.history.values])
    mean = [sum(g[t] for g in gaps) / len(gaps) for t in range(1001)]
    for t in (100, 500, 1000):
        assert mean[t] <= 2 * B**2 / (p.alpha * (t + 1))
    slope = loglog_slope(range(1001), mean, 50, 1000)
    assert -1.5 <= slope <= -0.7, slope


def test_minibatch_sgd_counts_oracle_calls_and_reduces_the_gap(problem):
    p = problem
    _, stoch = _component_grad(p)
    one = sgd(stoch, torch.zeros(10, dtype=torch.float64), step=0.5, n_steps=400, seed=1, monitor=p.value)
    many = sgd(stoch, torch.zeros(10, dtype=torch.float64), step=0.5, n_steps=400, batch_size=16, seed=1,
               monitor=p.value)
    assert many.history.oracle_calls[-1] == 16 * 400
    assert many.history.values[-1] - p.f_star < one.history.values[-1] - p.f_star


def test_svrg_contracts_at_least_0_9_per_epoch_as_theorem_6_5(problem):
    p = problem
    grad, _ = _component_grad(p)
    beta_i = float((p.A.norm(dim=1) ** 2).max()) / 4 + p.reg  # each f_i is beta_i-smooth
    kappa = beta_i / p.alpha
    k = math.ceil(20 * kappa)
    factors = []
    for seed in range(2):
        r = svrg(grad, 200, torch.zeros(10, dtype=torch.float64), step=1 / (10 * beta_i), epoch_length=k,
                 n_epochs=3, seed=seed, monitor=p.value)
        gaps = [v - p.f_star for v in r.history.values]
        factors.append((gaps[-1] / gaps[0]) ** (1 / 3))
    assert sum(factors) / len(factors) <= 0.9
    assert r.history.oracle_calls[-1] == 3 * (200 + 2 * k)


def test_bad_input(problem):
    _, stoch = _component_grad(problem)
    with pytest.raises(ValueError, match="batch_size"):
        sgd(stoch, torch.zeros(10, dtype=torch.float64), step=0.1, n_steps=5, batch_size=0)
    with pytest.raises(ValueError, match="step"):
        sgd(stoch, torch.zeros(10, dtype=torch.float64), step=lambda s: -1.0, n_steps=5)
