"""The privacy accountant: exact binomial hockey-stick against brute force on the whole protocol, calibration,
composition formulas, the Gaussian mechanism, the re-implementations' parameter form on stated inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from memopt.privacy.accountant import (
    advanced_composition,
    binomial_shift_delta,
    calibrate,
    classical_gaussian_sigma,
    gaussian_delta,
    gaussian_sigma,
    guarantee,
    reimplementation_parameters,
)
from memopt.privacy.summation import SummationParameters


def _binom(trials: int, p: float) -> np.ndarray:
    return np.array([math.comb(trials, k) * p**k * (1 - p) ** (trials - k) for k in range(trials + 1)])


def _hockey(a: np.ndarray, b: np.ndarray, eps: float) -> float:
    size = max(len(a), len(b))
    a, b = np.pad(a, (0, size - len(a))), np.pad(b, (0, size - len(b)))
    return float(np.clip(a - math.exp(eps) * b, 0, None).sum())


@pytest.mark.parametrize(("trials", "shift", "eps"), [(12, 1, 0.3), (40, 3, 1.0), (200, 6, 0.5)])
def test_binomial_shift_delta_matches_a_brute_force_sum(trials, shift, eps):
    pmf = _binom(trials, 0.25)
    shifted = np.concatenate([np.zeros(shift), pmf])
    expected = max(_hockey(shifted, pmf, eps), _hockey(pmf, shifted, eps))
    assert binomial_shift_delta(trials, 0.25, [shift], eps) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def _view(x: float, others: list[float], params: SummationParameters) -> np.ndarray:
    """Exact distribution of the analyzer's count C = sum_i r_i + Bin(n b, p) for one coordinate."""
    dist = np.array([1.0])
    for value in [x, *others]:
        w = (value + params.bound) * params.grid / params.bound
        low, frac = math.floor(w), w - math.floor(w)
        r = np.zeros(2 * params.grid + 2)
        r[low] += 1 - frac
        r[min(low + 1, len(r) - 1)] += frac
        dist = np.convolve(dist, r)
    return np.convolve(dist, _binom((1 + len(others)) * params.bits, params.p))


def test_the_derived_delta_bounds_the_whole_protocol_on_every_neighbouring_pair():
    # one coordinate, 3 users, grid 2, 5 noise bits each: enumerate inputs on a fine grid
    params = SummationParameters(1.0, 2, 5)
    eps = 0.8
    derived = binomial_shift_delta(3 * params.bits, params.p, 2 * params.grid, eps)
    values = [-1.0, -0.6, -0.1, 0.35, 0.9, 1.0]
    worst = 0.0
    for x, x2, o1, o2 in itertools.product(values, values, values[:3], values[3:]):
        a, b = _view(x, [o1, o2], params), _view(x2, [o1, o2], params)
        worst = max(worst, _hockey(a, b, eps))
    assert worst <= derived + 1e-12
    assert worst == pytest.approx(derived, rel=1e-9)  # attained by x = -1, x' = 1 (shift 2g, no rounding)


def test_calibrate_finds_the_fewest_bits_and_the_guarantee_holds():
    found = calibrate(users=100, dim=4, bound=1.0, epsilon=1.0, delta=1e-6)
    p = found.params
    assert p.grid == max(math.ceil(2 * math.sqrt(100)), 4, 4) and p.p == 0.25
    assert found.epsilon <= 1.0 + 1e-12 and found.delta <= 1e-6
    assert binomial_shift_delta(100 * p.bits, 0.25, 2 * p.grid, found.eps_coordinate) <= found.delta_coordinate
    # one bit fewer fails the per-coordinate budget of the rule that was used
    budget = {"basic": 1e-6 / 4, "advanced": 1e-6 / 8}[found.composition]
    assert binomial_shift_delta(100 * (p.bits - 1), 0.25, [2 * p.grid], found.eps_coordinate) > budget
    assert guarantee(SummationParameters(1.0, p.grid, p.bits // 2), 100, 4, 1.0, 1e-6) is None
    # more privacy costs more noise bits
    assert calibrate(100, 4, 1.0, 0.5, 1e-6).params.bits > p.bits
    with pytest.raises(ValueError, match="epsilon"):
        calibrate(500, 4, 1.0, 0.0, 1e-6)
    with pytest.raises(ValueError, match="delta"):
        calibrate(500, 4, 1.0, 1.0, 1.5)


def test_composition_and_reimplementation_formulas_on_stated_inputs():
    eps, delta = advanced_composition(0.1, 1e-8, 10, 1e-6)
    assert eps == pytest.approx(0.1 * math.sqrt(20 * math.log(1e6)) + math.expm1(0.1), rel=1e-12)
    assert eps == pytest.approx(1.767429, abs=1e-6) and delta == pytest.approx(1e-6 + 1e-7)
    # g = max(ceil(2 sqrt(100)), 10, 4) = 20; b = ceil(20^2 ln^2(10 / 1e-6) / (1 * 100)) = ceil(1039.2) = 1040
    assert reimplementation_parameters(100, 10, 1.0, 1e-6) == (20, 1040, 0.25)


def test_gaussian_mechanism_profile_and_sigma():
    sigma = gaussian_sigma(2.0, 1.0, 1e-5)
    assert gaussian_delta(sigma, 2.0, 1.0) == pytest.approx(1e-5, rel=1e-6)
    assert sigma < classical_gaussian_sigma(2.0, 1.0, 1e-5)  # the exact calibration needs less noise
    # the formula against numerical integration of [phi(x - D) - e^eps phi(x)]_+
    x = np.linspace(-40, 40, 400001)
    s, d, e = 3.0, 2.0, 0.7
    dens = lambda m: np.exp(-((x - m) ** 2) / (2 * s * s)) / (s * math.sqrt(2 * math.pi))
    integral = np.clip(dens(d) - math.exp(e) * dens(0.0), 0, None).sum() * (x[1] - x[0])
    assert gaussian_delta(s, d, e) == pytest.approx(integral, rel=1e-6)
