"""Mean and spread over seeds, and the Welch's t-test verdict against the baseline."""

from __future__ import annotations

import pytest

from memopt.harness.bench.statistics import Spread, format_spread, spread, welch_p_value, welch_verdict


def test_two_identical_optimizers_are_not_significantly_different():
    losses = [4.10, 4.13, 4.08]
    verdict = welch_verdict(losses, list(losses))
    assert verdict.label == "not significant" and verdict.p_value == pytest.approx(1.0)
    assert verdict.text == "not significant (p=1)"
    # the same optimizer, seed noise only: still not significant
    assert welch_verdict([4.11, 4.12, 4.09], losses).label == "not significant"


def test_a_clearly_worse_or_better_optimizer_is_significant():
    baseline = [4.10, 4.13, 4.08]
    worse = welch_verdict([4.60, 4.62, 4.57], baseline)
    assert worse.label == "worse" and worse.p_value < 0.001 and worse.text.startswith("worse (p=")
    better = welch_verdict([3.60, 3.62, 3.58], baseline)
    assert better.label == "better" and better.p_value < 0.001
    # p from the textbook formula: t = -25.1, Welch-Satterthwaite df = 3.9 -> p = 1.7e-5
    assert welch_p_value([3.60, 3.62, 3.58], baseline) == pytest.approx(1.7e-5, rel=0.1)


def test_without_spread_or_seeds():
    assert welch_p_value([4.0, 4.0], [4.0, 4.0]) == 1.0
    assert welch_p_value([4.0, 4.0], [4.5, 4.5]) == 0.0
    verdict = welch_verdict([4.0], [4.1, 4.2])
    assert verdict.label == "n/a" and verdict.p_value is None and "--seeds 2" in verdict.text


def test_spread_and_its_format():
    value = spread([1.0, 2.0, 3.0])
    assert value == Spread(2.0, 1.0, 3)
    assert format_spread(value, ".3f") == "2.000±1.000"
    assert format_spread(spread([2.5]), ".2f") == "2.50"
    assert format_spread(spread([]), ".2f") == "n/a"
