"""The shuffle summation protocol: per-message randomization, uniform shuffle, unbiased analyzer with the
stated variance (fixed seeds, distributional checks)."""

from __future__ import annotations

import math

import pytest
import torch

from memopt.privacy.summation import (
    SummationParameters,
    analyze,
    clip_rows,
    private_sum,
    protocol_sum,
    randomize,
    rounded,
    shuffle,
    variance,
    worst_case_variance,
)

PARAMS = SummationParameters(bound=1.0, grid=8, bits=30, p=0.25)


def test_a_user_sends_a_fixed_number_of_labelled_bits_with_its_rounded_value_among_them():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([-1.0, 0.3, 1.0], dtype=torch.float64)
    messages = randomize(x, PARAMS, g)
    assert messages.shape == (3 * (2 * 8 + 30), 2)
    assert set(messages[:, 1].tolist()) <= {0, 1}
    assert torch.bincount(messages[:, 0]).tolist() == [46, 46, 46]  # the same count whatever the input
    per_coordinate = messages.view(3, 46, 2)[:, :, 1]
    data = per_coordinate[:, :16].sum(1)
    assert data[0] == 0 and data[2] == 16  # the ends of [-B, B] round exactly to 0 and 2g
    assert data[1] in (10, 11)  # w = 1.3 * 8 = 10.4: floor or ceil


def test_noise_bits_are_bernoulli_p_and_rounding_is_unbiased():
    g = torch.Generator().manual_seed(1)
    x = torch.full((2000, 2), 0.3, dtype=torch.float64)
    bits = torch.stack([randomize(row, PARAMS, g).view(2, 46, 2)[:, 16:, 1] for row in x[:400]])
    frac = bits.double().mean().item()
    assert abs(frac - 0.25) < 4 * math.sqrt(0.25 * 0.75 / bits.numel())
    r = rounded(x, PARAMS, g).double()
    assert set(r.unique().tolist()) == {10.0, 11.0}
    # w = 10.4: P(r = 11) = 0.4
    assert abs((r == 11).double().mean().item() - 0.4) < 4 * math.sqrt(0.24 / r.numel())


def test_the_shuffler_is_a_uniform_permutation():
    g = torch.Generator().manual_seed(2)
    k, trials = 6, 6000
    messages = [torch.tensor([[i, 0]]) for i in range(k)]
    positions = torch.zeros(k)
    for _ in range(trials):
        out = shuffle(messages, g)
        positions[int((out[:, 0] == 0).nonzero())] += 1
    expected = trials / k
    chi2 = float(((positions - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # 99.9% quantile of chi-square with 5 degrees of freedom


def test_the_analyzer_is_unbiased_with_the_stated_variance():
    g = torch.Generator().manual_seed(3)
    n, d = 16, 3
    x = clip_rows(torch.randn(n, d, generator=g, dtype=torch.float64), 1.0)
    truth = x.sum(0)
    var = variance(x, PARAMS)
    assert (var <= worst_case_variance(n, PARAMS)).all()
    # the full protocol (messages, shuffle, analyzer) and the count sampler, with their own sample sizes
    for run, trials, tol in ((protocol_sum, 800, 0.2), (private_sum, 6000, 0.1)):
        out = torch.stack([run(x, PARAMS, g) for _ in range(trials)])
        se = (var / trials).sqrt()
        assert ((out.mean(0) - truth).abs() < 4 * se).all()
        # sample variance: relative s.e. sqrt(2 / trials) (5% for 800 draws, 1.8% for 6000)
        assert ((out.var(0) / var - 1).abs() < tol).all()


def test_messages_and_counts_give_the_same_analyzer_output_on_exact_grids():
    # inputs on the grid round deterministically: then only the noise bits are random
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    x = torch.tensor([[0.25, -0.5], [1.0, 0.0]], dtype=torch.float64)
    params = SummationParameters(1.0, 4, 0)
    assert torch.allclose(protocol_sum(x, params, g1), x.sum(0)) and torch.allclose(
        private_sum(x, params, g2), x.sum(0)
    )
    shuffled = shuffle([randomize(row, params) for row in x])
    assert torch.allclose(analyze(shuffled, 2, 2, params), x.sum(0))


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="bound"):
        SummationParameters(0.0, 4, 1)
    with pytest.raises(ValueError, match="grid"):
        SummationParameters(1.0, 0, 1)
    with pytest.raises(ValueError, match="p must be"):
        SummationParameters(1.0, 4, 1, p=1.0)
    with pytest.raises(ValueError, match="clip the inputs"):
        private_sum(torch.full((2, 2), 3.0, dtype=torch.float64), PARAMS)
    with pytest.raises(ValueError, match="one user's vector"):
        randomize(torch.zeros(2, 2), PARAMS)
