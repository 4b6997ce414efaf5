"""Reproducing the accelerated methods' published code: NAG-GS.

The authors' PyTorch class (``NagGS`` in the naggsopt/naggs experiments, used for their ViT and GLUE runs)
computes each step's new gamma but never stores it, so every step uses ``gamma_0``. Written here from its
description (ALGORITHMS-accel.md, section 1): with ``a = alpha / (alpha + 1)``, ``b = alpha mu / (alpha mu +
gamma_0)``, per tensor ``v <- v (1 - b); v <- v + b x; v <- v - (b / mu) g; x <- x (1 - a); x <- x + a v``,
``v`` starting as a copy of ``x``. ``memopt.NAGGS(fixed_gamma=True)`` must give the same bits.
"""

from __future__ import annotations

import pytest
import torch

from memopt.accelerated import NAGGS


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
