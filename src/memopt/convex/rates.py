"""Fitting measured convergence: log-log slopes (sublinear rates) and per-step contraction (linear rates)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def loglog_slope(
    t: Sequence[float], errors: Sequence[float], start: float | None = None, stop: float | None = None
) -> float:
    """Least-squares slope of ``log errors`` against ``log t`` over ``start <= t <= stop``.

    A rate ``errors ~ C t^-p`` gives ``-p``. Points with ``errors <= 0`` are dropped.
    """
    ts, es = np.asarray(t, dtype=float), np.asarray(errors, dtype=float)
    if ts.shape != es.shape:
        raise ValueError(f"t and errors must have the same length, got {ts.shape} and {es.shape}.")
    keep = (es > 0) & (ts > 0)
    if start is not None:
        keep &= ts >= start
    if stop is not None:
        keep &= ts <= stop
    if keep.sum() < 2:
        raise ValueError("need at least two positive points in the window to fit a slope; widen start/stop.")
    return float(np.polyfit(np.log(ts[keep]), np.log(es[keep]), 1)[0])


def contraction(errors: Sequence[float], start: int, stop: int) -> float:
    """Per-step factor ``rho`` of a linear rate ``errors[k] ~ C rho^k``, fitted on ``start <= k <= stop``.

    Least-squares slope of ``log errors[k]`` against ``k``, exponentiated.
    """
    es = np.asarray(errors, dtype=float)
    if not 0 <= start < stop < len(es):
        raise ValueError(f"need 0 <= start < stop < len(errors) = {len(es)}, got start={start}, stop={stop}.")
    window = es[start : stop + 1]
    if (window <= 0).any() or not np.isfinite(window).all():
        raise ValueError("errors must be positive and finite in the window; stop before machine precision.")
    k = np.arange(start, stop + 1)
    return float(math.exp(np.polyfit(k, np.log(window), 1)[0]))


def rate_exponent_ratio(measured: float, predicted: float) -> float:
    """``log(measured) / log(predicted)`` for two contraction factors in (0, 1): 1.0 means the same linear rate
    (the number of iterations per decade differs by this factor)."""
    if not (0 < measured < 1 and 0 < predicted < 1):
        raise ValueError(f"contraction factors must be in (0, 1), got {measured} and {predicted}.")
    return math.log(measured) / math.log(predicted)
