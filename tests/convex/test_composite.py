"""ISTA / FISTA against scikit-learn's Lasso, and the FISTA torch.optim optimizer's contract."""

from __future__ import annotations

import pytest
import torch

from memopt.convex import FISTA, fista, ista, prox_l1, prox_nonneg
from memopt.harness.problems.convex import lasso


@pytest.fixture(scope="module")
def problem():
    p = lasso(n=100, dim=40, lam=0.05, seed=0)
    return p, p.sklearn_solution()


def test_fista_and_ista_match_sklearn_lasso_to_1e_6(problem):
    p, reference = problem
    x0 = torch.zeros(40, dtype=torch.float64)
    f = fista(p.grad, prox_l1(p.lam), x0, beta=p.beta, n_steps=1500, monitor=p.value)
    i = ista(p.grad, prox_l1(p.lam), x0, step=1 / p.beta, n_steps=5000, monitor=p.value)
    assert float((f.x - reference).abs().max()) < 1e-6
    assert float((i.x - reference).abs().max()) < 1e-6
    assert torch.equal(f.x == 0, reference == 0)  # same support
    f_star = float(p.value(reference))
    d2 = float(reference.norm()) ** 2
    for t in range(1, 200):
        assert f.history.values[t] - f_star <= 2 * p.beta * d2 / t**2 + 1e-12
        assert i.history.values[t] - f_star <= p.beta * d2 / (2 * t) + 1e-12


def _run_optimizer(p, steps, make, state=None):
    w = torch.zeros(40, dtype=torch.float64, requires_grad=True)
    opt = make([w])
    if state is not None:
        w.data.copy_(state[0])
        opt.load_state_dict(state[1])
    for _ in range(steps):
        opt.zero_grad()
        p.f(w).backward()
        opt.step()
    return w, opt


def test_fista_optimizer_reproduces_the_functional_fista_and_sklearn(problem):
    p, reference = problem
    w, opt = _run_optimizer(p, 150, lambda ps: FISTA(ps, lr=1 / p.beta, prox="l1", l1=p.lam))
    functional = fista(p.grad, prox_l1(p.lam), torch.zeros(40, dtype=torch.float64), beta=p.beta, n_steps=150)
    assert torch.allclose(opt.solution()[0], functional.x, atol=1e-13)
    opt.load_solution()
    assert float((w.detach() - reference).abs().max()) < 1e-6


def test_fista_optimizer_state_dict_round_trip_continues_exactly(problem):
    p, _ = problem

    def make(ps):
        return FISTA(ps, lr=1 / p.beta, prox="l1", l1=p.lam)

    straight, opt_straight = _run_optimizer(p, 20, make)
    first, opt_first = _run_optimizer(p, 10, make)
    saved = (first.detach().clone(), opt_first.state_dict())
    assert set(saved[1]["state"][0]) == {"step", "lambda", "y"}
    resumed, opt_resumed = _run_optimizer(p, 10, make, state=saved)
    assert torch.equal(resumed.detach(), straight.detach())
    assert torch.equal(opt_resumed.state[resumed]["y"], opt_straight.state[straight]["y"])
    assert float(opt_resumed.state[resumed]["step"]) == 20


def test_param_groups_carry_their_own_prox_and_hyperparameters():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, generator=g, dtype=torch.float64)
    target_a = torch.tensor([2.0, -1.0, 0.05, -0.02, 0.5, -3.0], dtype=torch.float64)
    wa = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    wb = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = FISTA([{"params": [wa], "prox": "l1", "l1": 0.1}, {"params": [wb], "prox": "nonneg"}], lr=1.0)
    assert opt.param_groups[0]["l1"] == 0.1 and opt.param_groups[1]["prox"] == "nonneg"
    for _ in range(200):
        opt.zero_grad()
        (0.5 * ((wa - target_a) ** 2).sum() + 0.5 * ((wb - a) ** 2).sum()).backward()
        opt.step()
    ya, yb = opt.solution()
    assert torch.allclose(ya, torch.sign(target_a) * torch.clamp(target_a.abs() - 0.1, min=0), atol=1e-10)
    assert torch.allclose(yb, prox_nonneg()(a, 1.0), atol=1e-10)
    # a scheduler changes lr in param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1.0}, "lr must be"),
        ({"lr": 0.1, "prox": "l2"}, "prox must be one of"),
        ({"lr": 0.1, "prox": "l1", "l1": -0.5}, "l1 must be"),
        ({"lr": 0.1, "prox": "none", "l1": 0.5}, "use prox='l1'"),
        ({"lr": 0.1, "restart": "yes"}, "restart must be"),
    ],
)
def test_bad_hyperparameters_name_the_parameter_and_the_fix(kwargs, match):
    w = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        FISTA([w], **kwargs)
    opt = FISTA([w], lr=0.1)
    with pytest.raises(ValueError, match=match):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], **kwargs})


def test_restart_option_still_converges(problem):
    p, reference = problem
    _, opt = _run_optimizer(p, 600, lambda ps: FISTA(ps, lr=1 / p.beta, prox="l1", l1=p.lam, restart=True))
    assert float((opt.solution()[0] - reference).abs().max()) < 1e-6
