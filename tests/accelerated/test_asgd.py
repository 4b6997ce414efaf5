"""Accelerated SGD: both forms against plain references, the subspace claims at small scale, resume, errors."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import make_grads, make_params, run, save_and_reload

from memopt.accelerated.asgd import ASGD, FourParameterASGD, accsgd_to_four_parameter
from memopt.harness.experiments.asgd import checkpoints, risks
from memopt.harness.problems.quadratic import Quadratic


def quadratic_run(make, problem: Quadratic, steps: int) -> torch.Tensor:
    x = torch.zeros(problem.dim, dtype=torch.float64, requires_grad=True)
    optimizer = make([x])
    out = []
    for _ in range(steps):
        x.grad = problem.grad(x.detach())
        optimizer.step()
        out.append(x.detach().clone())
    return torch.stack(out)


@pytest.fixture(scope="module")
def problem() -> Quadratic:
    return Quadratic.with_spectrum(torch.logspace(-4, 0, 25, dtype=torch.float64), seed=3)


def test_accsgd_matches_its_published_recursion(problem):
    lr, kappa, xi, c = 0.5, 100.0, 5.0, 0.7
    ours = quadratic_run(lambda p: ASGD(p, lr=lr, kappa=kappa, xi=xi, small_const=c), problem, 150)
    A, long_step = 1 - c * c * xi / kappa, lr * kappa / c
    zeta = c / (c + 1 - A)
    theta = torch.zeros(problem.dim, dtype=torch.float64)
    w_bar, expected = theta.clone(), []
    for _ in range(150):
        g = problem.grad(theta)
        w_bar = A * w_bar + (1 - A) * (theta - long_step * g)
        theta = zeta * (theta - lr * g) + (1 - zeta) * w_bar
        expected.append(theta)
    torch.testing.assert_close(ours, torch.stack(expected), rtol=1e-12, atol=1e-12)


def test_accsgd_is_jains_four_parameter_method_under_the_mapping(problem):
    """Jain et al.'s three lines with explicit w, v and y, the parameters from accsgd_to_four_parameter."""
    k = accsgd_to_four_parameter(0.5, 100.0, 5.0, 0.7)
    ours = quadratic_run(lambda p: ASGD(p, lr=0.5, kappa=100.0, xi=5.0, small_const=0.7), problem, 150)
    four = quadratic_run(
        lambda p: FourParameterASGD(p, lr=k["delta"], alpha=k["alpha"], beta=k["beta"], gamma=k["gamma"]), problem, 150
    )
    w = v = torch.zeros(problem.dim, dtype=torch.float64)
    expected = []
    for _ in range(150):
        y = k["alpha"] * w + (1 - k["alpha"]) * v
        g = problem.grad(y)
        w = y - k["delta"] * g
        v = k["beta"] * y + (1 - k["beta"]) * v - k["gamma"] * g
        expected.append(k["alpha"] * w + (1 - k["alpha"]) * v)  # the next query point, what the parameters hold
    torch.testing.assert_close(four, torch.stack(expected), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours, four, rtol=1e-12, atol=1e-12)


def test_beta_zero_and_alpha_one_is_sgd():
    params, grads = make_params([(4, 3)]), make_grads([(4, 3)], 10)
    ours, _ = run(lambda ps: FourParameterASGD(ps, lr=0.1, alpha=1.0, beta=0.0, gamma=0.3), params, grads)
    theirs, _ = run(lambda ps: torch.optim.SGD(ps, lr=0.1), params, grads)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-14, atol=1e-14)


def test_faster_tail_bias_and_larger_variance_than_sgd_on_ill_conditioned_least_squares():
    """The risk-bounds paper's claims at small scale (the recorded study uses more samples and seeds)."""
    steps, ones, zeros = 2000, torch.ones(200, dtype=torch.float64), torch.zeros(200, dtype=torch.float64)
    sgd = lambda p: torch.optim.SGD(p, lr=0.2)
    asgd = lambda p: ASGD(p, lr=0.2, kappa=1000.0, xi=10.0, small_const=0.7)
    tail_bias = [sum(risks(m, s, steps, ones, 0.0)["tail"][-1] for s in range(2)) for m in (sgd, asgd)]
    variance = [sum(sum(risks(m, 100 + s, steps, zeros, 1.0)[k][-1] for k in ("head", "tail")) for s in range(2))
                for m in (sgd, asgd)]  # fmt: skip
    assert tail_bias[1] < 0.7 * tail_bias[0]
    assert variance[1] > 1.3 * variance[0]
    assert checkpoints(steps)[-1] == steps


@pytest.mark.parametrize(
    "make",
    [lambda ps: ASGD(ps, lr=0.05, weight_decay=0.01), lambda ps: FourParameterASGD(ps, lr=0.05, beta=0.1)],
    ids=["accsgd", "four_parameter"],
)
def test_save_load_continue_is_bit_identical(make):
    shapes = [(5, 3), (4,)]
    params, grads = make_params(shapes, torch.float32), make_grads(shapes, 12, torch.float32)
    straight, _ = run(make, params, grads)
    halfway, optimizer = run(make, params, grads[:5])
    new_params, new_optimizer = save_and_reload(optimizer, make, halfway)
    resumed, _ = run(make, new_params, grads[5:], optimizer=new_optimizer)
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda w: ASGD(w, small_const=1.5), r"Invalid small_const: 1\.5\. small_const \(c\) must lie in \(0, 1\]"),
        (lambda w: ASGD(w, kappa=10.0, xi=100.0), r"Invalid xi: 100\.0.*xi <= sqrt\(kappa\)"),
        (lambda w: ASGD(w, kappa=-1.0), r"Invalid kappa: -1\.0"),
        (lambda w: FourParameterASGD(w, alpha=1.2), r"Invalid alpha: 1\.2\. alpha must lie in \[0, 1\]"),
        (lambda w: FourParameterASGD(w, gamma=-0.1), r"Invalid gamma: -0\.1"),
    ],
)
def test_invalid_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make([torch.zeros(2, requires_grad=True)])
