"""Reproducing the accelerated methods' published code: NAG-GS, and META-STORM / STORM+ (fastr-public).

The authors' PyTorch class (``NagGS`` in the naggsopt/naggs experiments, used for their ViT and GLUE runs)
computes each step's new gamma but never stores it, so every step uses ``gamma_0``. Written here from its
description (ALGORITHMS-accel.md, section 1): with ``a = alpha / (alpha + 1)``, ``b = alpha mu / (alpha mu +
gamma_0)``, per tensor ``v <- v (1 - b); v <- v + b x; v <- v - (b / mu) g; x <- x (1 - a); x <- x + a v``,
``v`` starting as a copy of ``x``. ``memopt.NAGGS(fixed_gamma=True)`` must give the same bits.
"""

from __future__ import annotations

import pytest
import torch
from tests.accelerated.authors_storm import authors_storm_run
from tests.accelerated.test_storm import assert_resume_is_bit_identical, oracle, sample_loss, samples, start

from memopt.accelerated import NAGGS
from memopt.accelerated.storm import MetaSTORM, STORMPlus


def published_naggs_run(x0: torch.Tensor, grad_fn, steps: int, alpha: float, mu: float, gamma: float):
    """The authors' class, step by step: the same in-place operations in the same order."""
    x = x0.clone()
    v = x0.clone()
    a = alpha / (alpha + 1)
    trajectory = []
    for _ in range(steps):
        g = grad_fn(x)
        b = alpha * mu / (alpha * mu + gamma)  # gamma is never updated
        v.mul_(1 - b)
        v.add_(x, alpha=b)
        v.add_(g, alpha=-b / mu)
        x.mul_(1 - a)
        x.add_(v, alpha=a)
        trajectory.append(x.clone())
    return trajectory


def _quartic_grad(x: torch.Tensor) -> torch.Tensor:
    """The gradient of ``sum(x^4 / 4 - x^2 / 2 + 0.3 x)`` scaled down (bounded iterates at these steps)."""
    return 0.25 * (x**3 - x + 0.3)


@pytest.mark.parametrize("alpha, mu, gamma", [(0.3, 0.1301, 0.3554), (0.07929, 0.1301, 0.3554), (0.05, 1.0, 1.5)])
def test_fixed_gamma_reproduces_the_published_class_bit_for_bit(alpha, mu, gamma):
    torch.manual_seed(0)
    x0 = torch.randn(7, 5)
    expected = published_naggs_run(x0, _quartic_grad, 40, alpha, mu, gamma)
    param = torch.nn.Parameter(x0.clone())
    optimizer = NAGGS([param], lr=alpha, mu=mu, gamma=gamma, fixed_gamma=True)
    for k in range(40):
        param.grad = _quartic_grad(param.detach())
        optimizer.step()
        assert torch.equal(param.detach(), expected[k]), f"step {k + 1} differs"
    assert torch.isfinite(param).all() and not torch.equal(param.detach(), x0)
    assert optimizer.state[param]["gamma"] == gamma


def test_the_default_updates_gamma_and_so_departs_from_the_published_class():
    x0 = torch.linspace(-1, 1, 6)
    expected = published_naggs_run(x0, _quartic_grad, 20, 0.05, 1.0, 1.5)
    param = torch.nn.Parameter(x0.clone())
    optimizer = NAGGS([param], lr=0.05, mu=1.0, gamma=1.5)
    for _ in range(20):
        param.grad = _quartic_grad(param.detach())
        optimizer.step()
    assert optimizer.state[param]["gamma"] != 1.5
    assert torch.isfinite(param).all()
    assert (param.detach() - expected[-1]).abs().max() > 1e-4


STORM_CASES = {
    "meta_storm_general": (
        dict(rule="general", lr=0.2, a0=0.5, b0=0.1),
        lambda ps, **kw: MetaSTORM(ps, 0.2, 0.5, 0.5, 0.1, **kw),
    ),
    "meta_storm_general_coordinate_ema": (
        dict(rule="general", lr=0.05, a0=0.1, b0=1e-3, per_coordinate=True, ema=True, betas=(0.9, 0.8),
             bias_correction=True),
        lambda ps, **kw: MetaSTORM(ps, 0.05, 0.5, 0.1, 1e-3, per_coordinate=True, ema=True, betas=(0.9, 0.8),
                                   bias_correction=True, **kw),
    ),
    "meta_storm_sg_ema": (
        dict(rule="sg", lr=0.1, a0=2.0, b0=0.1, p=0.3, ema=True, betas=(0.9, 0.8), bias_correction=True),
        lambda ps, **kw: MetaSTORM(ps, 0.1, 0.3, 2.0, 0.1, variant="sg", ema=True, betas=(0.9, 0.8),
                                   bias_correction=True, **kw),
    ),
    "meta_storm_sum_bias_corrected": (
        dict(rule="general", lr=0.2, a0=0.5, b0=0.1, betas=(0.9, 0.8), bias_correction=True),
        lambda ps, **kw: MetaSTORM(ps, 0.2, 0.5, 0.5, 0.1, betas=(0.9, 0.8), bias_correction=True, **kw),
    ),
    "storm_plus": (dict(rule="storm_plus", lr=0.3, a0=1.0, b0=1.0), lambda ps, **kw: STORMPlus(ps, lr=0.3, **kw)),
    "storm_plus_coordinate_ema": (
        dict(rule="storm_plus", lr=0.05, a0=0.1, b0=1e-3, per_coordinate=True, ema=True, bias_correction=True),
        lambda ps, **kw: STORMPlus(ps, 0.05, 0.1, 1e-3, per_coordinate=True, ema=True, bias_correction=True, **kw),
    ),
}  # fmt: skip


def _storm_run(make, batches, **kwargs):
    """memopt's iterates after each step and the losses the closure returned."""
    params = [p.clone().requires_grad_() for p in start()]
    optimizer = make(params, **kwargs)
    iterates, losses = [], []
    for index in batches:

        def closure(index=index):
            optimizer.zero_grad()
            loss = sample_loss(*params, index)
            loss.backward()
            return loss

        losses.append(float(optimizer.step(closure).detach()))
        iterates.append([p.detach().clone() for p in params])
    return iterates, losses


def _authors_loss(params, index):
    return float(sample_loss(*params, index))


@pytest.mark.parametrize("case", sorted(STORM_CASES))
def test_authors_conventions_reproduce_the_fastr_public_loop(case):
    settings, make = STORM_CASES[case]
    batches = samples(21, seed=3)
    ours, our_losses = _storm_run(make, batches[:20], conventions="authors")
    points, their_losses = authors_storm_run(start(), oracle, _authors_loss, batches, **settings)
    # their step k moves with the estimate of step k - 1; ours applies it at once, so our point after step k
    # is theirs after step k + 1's move, and from step 2 on the closure's loss is the one their loop logs
    for k in range(20):
        for got, want in zip(ours[k], points[k + 1]):
            torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-13, msg=f"step {k + 1}")
    assert our_losses[1:] == pytest.approx(their_losses[1:20], rel=1e-12)
    assert not torch.equal(ours[-1][0], start()[0])


@pytest.mark.parametrize("case", ["meta_storm_general_coordinate_ema", "storm_plus"])
def test_the_default_conventions_depart_from_the_authors_loop(case):
    settings, make = STORM_CASES[case]
    batches = samples(21, seed=3)
    ours, _ = _storm_run(make, batches[:20])
    points, _ = authors_storm_run(start(), oracle, _authors_loss, batches, **settings)
    assert (ours[-1][0] - points[-1][0]).abs().max() > 1e-4


def test_unknown_conventions_are_rejected():
    with pytest.raises(ValueError, match=r"Invalid conventions: 'author'.*Did you mean 'authors'"):
        MetaSTORM([torch.zeros(2, requires_grad=True)], conventions="author")


def test_authors_conventions_resume_bit_identically_and_old_checkpoints_load_with_the_default():
    _, make = STORM_CASES["storm_plus_coordinate_ema"]
    # saved right after the doubled first step
    saved = assert_resume_is_bit_identical(lambda ps: make(ps, conventions="authors"), samples(8, seed=3), 1)
    assert saved["param_groups"][0]["conventions"] == "authors"
    # a checkpoint written before the option existed has no "conventions": it loads as the default
    for group in saved["param_groups"]:
        del group["conventions"]
    old = make([p.clone().requires_grad_() for p in start()])
    old.load_state_dict(saved)
    assert old.param_groups[0]["conventions"] == "paper"
