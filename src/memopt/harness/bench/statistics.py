"""Statistics over seeds for ``memopt compare``: mean and spread of a measure, and a verdict per optimizer.

A verdict compares an optimizer's final validation losses over seeds with the baseline's by Welch's t-test
(unequal variances, two-sided, ``scipy.stats.ttest_ind(equal_var=False)``) at the 5 % level: "better" or
"worse" when the difference is significant, else "not significant". With fewer than two seeds on either
side there is no test ("n/a").
"""

from __future__ import annotations

import math
import statistics as pystats
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

#: the significance level of :func:`welch_verdict`
ALPHA = 0.05


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (``ddof=1``; None for a single value) of ``n`` values."""

    mean: float | None
    sd: float | None
    n: int


def spread(values: Sequence[float]) -> Spread:
    """The :class:`Spread` of ``values`` (mean None when empty)."""
    values = [float(v) for v in values]
    if not values:
        return Spread(None, None, 0)
    sd = pystats.stdev(values) if len(values) > 1 else None
    return Spread(pystats.fmean(values), sd, len(values))


def format_spread(value: Spread, spec: str, missing: str = "n/a") -> str:
    """``mean±sd`` (no spaces, so a table row splits on whitespace), or ``mean`` for one value."""
    if value.mean is None:
        return missing
    text = format(value.mean, spec)
    return text if value.sd is None else f"{text}±{format(value.sd, spec)}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing an optimizer with the baseline.

    Attributes:
        label: ``"baseline"``, ``"better"``, ``"worse"``, ``"not significant"`` or ``"n/a"``.
        p_value: the two-sided p-value of Welch's t-test (None without a test).
        text: one line for the table, e.g. ``"better (p=0.003)"``.
    """

    label: str
    p_value: float | None
    text: str


def welch_p_value(values: Sequence[float], reference: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test of equal means (both samples need two or more values).

    Two samples without any spread give 1.0 if their means are equal and 0.0 otherwise (the t statistic
    is 0/0 or infinite there; scipy returns NaN).
    """
    a, b = [float(v) for v in values], [float(v) for v in reference]
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t-test needs at least two values in each sample")
    if pystats.pvariance(a) == 0.0 and pystats.pvariance(b) == 0.0:
        return 1.0 if pystats.fmean(a) == pystats.fmean(b) else 0.0
    p = float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
    return 1.0 if math.isnan(p) else p


def welch_verdict(values: Sequence[float], baseline: Sequence[float], *, alpha: float = ALPHA) -> Verdict:
    """Whether ``values`` (lower is better, e.g. final validation losses over seeds) differ significantly
    from ``baseline``'s by Welch's t-test at level ``alpha``."""
    if len(values) < 2 or len(baseline) < 2:
        return Verdict("n/a", None, "n/a (needs --seeds 2 or more)")
    p = welch_p_value(values, baseline)
    if p >= alpha:
        return Verdict("not significant", p, f"not significant (p={p:.2g})")
    label = "better" if pystats.fmean(values) < pystats.fmean(baseline) else "worse"
    return Verdict(label, p, f"{label} (p={p:.2g})")
