"""Stochastic rounding to bfloat16: each result is one of the two neighbours, and the mean is the input."""

from __future__ import annotations

import pytest
import torch

from memopt.state.rounding import rounding_generator, stochastic_round_to_bfloat16


def _neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bfloat16 values just below and just above (in magnitude) each float32 ``x``: truncation and
    truncation plus one bfloat16 ulp, computed on the bit patterns."""
    bits = x.view(torch.int32)
    down = (bits & -(1 << 16)).view(torch.float32)
    up = ((bits & -(1 << 16)) + (1 << 16)).view(torch.float32)
    return down, up


def test_results_are_neighbours_and_unbiased():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, generator=generator) * 10.0 ** torch.randint(-6, 6, (64,), generator=generator)
    draws = torch.stack([stochastic_round_to_bfloat16(x, generator).float() for _ in range(4000)])
    down, up = _neighbours(x)
    assert bool(((draws == down) | (draws == up)).all())
    # P(up) is the distance to the lower neighbour in units of the gap; the sample mean of 4000 draws
    # lies within 5 standard errors of x (standard error <= gap / (2 sqrt(4000)))
    gap = (up - down).abs()
    assert bool(((draws.double().mean(0) - x.double()).abs() <= 5 * gap.double() / (2 * 4000**0.5)).all())


def test_exact_bfloat16_values_are_kept():
    x = torch.randn(1000).to(torch.bfloat16).float()
    assert torch.equal(stochastic_round_to_bfloat16(x, torch.Generator().manual_seed(1)).float(), x)


def test_non_finite_values_are_kept():
    x = torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0, -0.0])
    y = stochastic_round_to_bfloat16(x).float()
    assert y[0] == float("inf") and y[1] == float("-inf") and y[2].isnan() and y[3] == 0 and y[4] == 0


def test_seeded_generator_reproduces_and_differs_per_step():
    x = torch.rand(10_000) + 1.0
    a = stochastic_round_to_bfloat16(x, rounding_generator(x.device, 3, 7))
    b = stochastic_round_to_bfloat16(x, rounding_generator(x.device, 3, 7))
    c = stochastic_round_to_bfloat16(x, rounding_generator(x.device, 3, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_out_is_checked():
    x = torch.ones(4)
    out = torch.empty(4, dtype=torch.bfloat16)
    assert stochastic_round_to_bfloat16(x, out=out) is out
    with pytest.raises(ValueError, match="out: expected a bfloat16 tensor of shape"):
        stochastic_round_to_bfloat16(x, out=torch.empty(4))
