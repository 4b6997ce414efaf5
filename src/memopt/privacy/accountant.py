r"""Privacy accounting for the shuffle summation protocol and for the Gaussian baselines.

**What could be read.** Only the abstract of Cheu, Joseph, Mao & Peng (ICLR 2022, arXiv 2106.09805) was
reachable; its theorem for the vector-sum protocol (exact ``g, b, p``, admissible ``(epsilon, delta)``,
constants, theorem number) was not. :func:`reimplementation_parameters` gives the *form* used by public
re-implementations (``g = max(2 sqrt n, d, 4)``, ``p = 1/4``, ``b = C g^2 log^2(d/delta) / (epsilon^2 n)``
with a tuned ``C``); it is **not** verified against the paper and no guarantee is attached to it.

**The guarantee we use instead [derived].** Users send the same number of one-bit messages whatever their
input, so the shuffled multiset is equivalent to the counts ``C_k = sum_i r_{ik} + N_k``, ``k = 1..d``, with
independent ``N_k ~ Bin(n b, p)`` (:mod:`memopt.privacy.summation`). Replacing one user changes its rounded
values ``r_k in {0..2g}``, i.e. shifts each count by an integer ``s_k`` with ``|s_k| <= 2g``. For every fixed
realisation of the rounding the view is a product of ``d`` binomial shift mechanisms; by joint convexity of
the hockey-stick divergence the mixture over roundings is no worse than the worst realisation. So:

1. one coordinate is ``(eps1, delta1)``-DP with the **exact** ``delta1 = max_{1 <= s <= 2g} max(H_s, H_{-s})``,
   ``H_s = sum_j [P(N + s = j) - e^{eps1} P(N = j)]_+`` (:func:`binomial_shift_delta`; computed on a window of
   ``+-12`` standard deviations, with Hoeffding's bound on the mass outside added to ``delta1``);
2. the ``d`` coordinates compose by basic composition ``(d eps1, d delta1)`` or by advanced composition
   (Dwork, Rothblum & Vadhan 2010; Dwork & Roth 2014, Theorem 3.20)
   ``(eps1 sqrt(2 d ln(1/delta')) + d eps1 (e^{eps1} - 1), d delta1 + delta')``, whichever is smaller.

This is conservative (it uses the per-coordinate worst case ``|s_k| = 2g`` on every coordinate, where an
``l2``-bounded input can only be large on few), so its noise grows like ``sqrt(d log(1/delta))`` times the
central Gaussian mechanism's, where the paper's abstract announces ``log(d/delta)``-type factors.

**Gaussian mechanism** (central and local baselines): :func:`gaussian_delta` is the exact privacy profile of
adding ``N(0, sigma^2 I)`` to a function of ``l2``-sensitivity ``Delta`` (Balle & Wang, ICML 2018,
Theorem 8): ``delta(eps) = Phi(Delta/(2 sigma) - eps sigma/Delta) - e^eps Phi(-Delta/(2 sigma) - eps sigma/Delta)``,
and :func:`gaussian_sigma` the smallest ``sigma`` meeting ``(eps, delta)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from memopt.privacy.summation import SummationParameters, grid_from_users

_WINDOW_SD = 12.0


def _check_eps_delta(epsilon: float, delta: float) -> None:
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}.")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}.")


def binomial_shift_delta(trials: int, p: float, shifts: int | list[int], epsilon: float) -> float:
    """``max_s max(H_s, H_{-s})`` over ``s`` in ``shifts`` (an int ``S`` means ``1..S``): the exact ``delta`` at
    ``epsilon`` of releasing ``c + N``, ``N ~ Bin(trials, p)``, when neighbours shift ``c`` by ``s``."""
    if trials < 0 or not 0 < p < 1:
        raise ValueError(f"need trials >= 0 and 0 < p < 1, got trials={trials}, p={p}.")
    shift_list = list(range(1, shifts + 1)) if isinstance(shifts, int) else list(shifts)
    if not shift_list or min(shift_list) < 1:
        raise ValueError(f"shifts must be positive integers, got {shifts!r}.")
    if trials == 0:
        return 1.0
    mean, sd = trials * p, math.sqrt(trials * p * (1 - p))
    smax = max(shift_list)
    half = _WINDOW_SD * sd + smax + 10
    lo, hi = max(0, math.floor(mean - half)), min(trials, math.ceil(mean + half))
    # mass of N outside [lo, hi] (Hoeffding; zero when the window covers the support)
    outside = 0.0
    if lo > 0:
        outside += math.exp(-2 * (mean - lo) ** 2 / trials)
    if hi < trials:
        outside += math.exp(-2 * (hi - mean) ** 2 / trials)
    k = torch.arange(lo, hi + 1, dtype=torch.float64)
    logp = (
        math.lgamma(trials + 1)
        - torch.lgamma(k + 1)
        - torch.lgamma(trials - k + 1)
        + k * math.log(p)
        + (trials - k) * math.log1p(-p)
    )
    pmf = logp.exp()
    worst = 0.0
    e = math.exp(epsilon)
    for s in shift_list:
        # P(N + s = j) = pmf[j - s]; on the window, index shift by s
        shifted, base = pmf[:-s], pmf[s:]  # aligned on j = lo + s .. hi
        up = torch.clamp(shifted - e * base, min=0).sum() + pmf[-s:].sum()  # N + s beyond hi: base ~ 0 there
        down = torch.clamp(base - e * shifted, min=0).sum() + pmf[:s].sum()
        worst = max(worst, float(up), float(down))
    return min(1.0, worst + outside)


def basic_composition(eps1: float, delta1: float, k: int) -> tuple[float, float]:
    """``k``-fold composition of ``(eps1, delta1)``-DP mechanisms: ``(k eps1, k delta1)``."""
    return k * eps1, k * delta1


def advanced_composition(eps1: float, delta1: float, k: int, delta_prime: float) -> tuple[float, float]:
    """Dwork-Rothblum-Vadhan (Dwork & Roth, Theorem 3.20):
    ``(eps1 sqrt(2k ln(1/delta')) + k eps1 (e^eps1 - 1), k delta1 + delta')``."""
    eps = eps1 * math.sqrt(2 * k * math.log(1 / delta_prime)) + k * eps1 * math.expm1(eps1)
    return eps, k * delta1 + delta_prime


def _solve_advanced_eps1(epsilon: float, k: int, delta_prime: float) -> float:
    lo, hi = 0.0, epsilon
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if advanced_composition(mid, 0.0, k, delta_prime)[0] <= epsilon:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class ShuffleGuarantee:
    """The derived ``(epsilon, delta)`` of the summation protocol with ``params`` over ``users`` users in
    ``dim`` dimensions, with its per-coordinate budget and the composition rule used."""

    params: SummationParameters
    users: int
    dim: int
    epsilon: float
    delta: float
    eps_coordinate: float
    delta_coordinate: float
    composition: str


def coordinate_budgets(epsilon: float, delta: float, dim: int) -> list[tuple[str, float, float, float]]:
    """``(rule, eps1, delta1, delta')`` per composition rule that splits ``(epsilon, delta)`` over ``dim``
    coordinates: basic (``eps/d, delta/d``) and advanced (``delta' = delta/2``, ``delta1 = delta/(2d)``)."""
    _check_eps_delta(epsilon, delta)
    basic = ("basic", epsilon / dim, delta / dim, 0.0)
    advanced = ("advanced", _solve_advanced_eps1(epsilon, dim, delta / 2), delta / (2 * dim), delta / 2)
    return [basic, advanced]


def guarantee(
    params: SummationParameters, users: int, dim: int, epsilon: float, delta: float
) -> ShuffleGuarantee | None:
    """The derived guarantee if ``params`` achieves ``(epsilon, delta)`` under either composition rule, else None."""
    for rule, eps1, delta1, delta_prime in coordinate_budgets(epsilon, delta, dim):
        d1 = binomial_shift_delta(users * params.bits, params.p, 2 * params.grid, eps1)
        if d1 <= delta1:
            total = (
                basic_composition(eps1, d1, dim)
                if rule == "basic"
                else advanced_composition(eps1, d1, dim, delta_prime)
            )
            return ShuffleGuarantee(params, users, dim, total[0], total[1], eps1, d1, rule)
    return None


def calibrate(
    users: int,
    dim: int,
    bound: float,
    epsilon: float,
    delta: float,
    grid: int | None = None,
    p: float = 0.25,
) -> ShuffleGuarantee:
    """The fewest noise bits ``b`` (per user and coordinate) for which the derived guarantee gives
    ``(epsilon, delta)`` (grid default :func:`~memopt.privacy.summation.grid_from_users`)."""
    _check_eps_delta(epsilon, delta)
    if users < 1 or dim < 1:
        raise ValueError(f"users and dim must be >= 1, got users={users}, dim={dim}.")
    grid = grid_from_users(users, dim) if grid is None else grid
    best: ShuffleGuarantee | None = None
    for rule, eps1, delta1, _ in coordinate_budgets(epsilon, delta, dim):
        # search on the largest shift 2g (the binding one for this log-concave noise), then verify all shifts
        def ok(bits: int, eps1: float = eps1, delta1: float = delta1) -> bool:
            return binomial_shift_delta(users * bits, p, [2 * grid], eps1) <= delta1

        hi = 1
        while not ok(hi):
            hi *= 2
            if hi > 2**40:
                raise ValueError(f"no number of noise bits reaches epsilon={epsilon}, delta={delta}.")
        lo = hi // 2  # ok(lo) is False (or lo == 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ok(mid) else (mid, hi)
        found = None
        while found is None:
            found = guarantee(SummationParameters(bound, grid, hi, p), users, dim, epsilon, delta)
            hi = hi if found is not None else hi + max(1, hi // 100)
        params = found.params
        if found is not None and (best is None or hi < best.params.bits):
            best = ShuffleGuarantee(params, users, dim, found.epsilon, found.delta, eps1, found.delta_coordinate, rule)
    assert best is not None
    return best


def reimplementation_parameters(users: int, dim: int, epsilon: float, delta: float, scale: float = 1.0):
    """``(g, b, p)`` in the form of the public re-implementations of the paper's protocol:
    ``g = max(ceil(2 sqrt n), d, 4)``, ``p = 1/4``, ``b = ceil(scale g^2 ln^2(d/delta) / (epsilon^2 n))``.

    NOT verified against the paper (whose text was not available): no privacy guarantee is claimed for it;
    use :func:`guarantee` to check what a given ``(g, b, p)`` achieves.
    """
    _check_eps_delta(epsilon, delta)
    g = grid_from_users(users, dim)
    b = math.ceil(scale * g * g * math.log(dim / delta) ** 2 / (epsilon**2 * users))
    return g, b, 0.25


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """Exact ``delta(epsilon)`` of the Gaussian mechanism (Balle & Wang 2018, Theorem 8)."""
    if not sigma > 0 or not sensitivity > 0:
        raise ValueError(f"sigma and sensitivity must be > 0, got sigma={sigma}, sensitivity={sensitivity}.")
    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    return max(0.0, _phi(a - b) - math.exp(epsilon) * _phi(-a - b))


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """The smallest ``sigma`` with :func:`gaussian_delta` ``<= delta`` (bisection, relative accuracy 1e-10)."""
    _check_eps_delta(epsilon, delta)
    lo, hi = 1e-6 * sensitivity, sensitivity
    while gaussian_delta(hi, sensitivity, epsilon) > delta:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if gaussian_delta(mid, sensitivity, epsilon) <= delta else (mid, hi)
        if hi - lo < 1e-10 * hi:
            break
    return hi


def classical_gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """``Delta sqrt(2 ln(1.25/delta)) / epsilon`` (Dwork & Roth 2014, Theorem A.1; valid for ``epsilon < 1``)."""
    _check_eps_delta(epsilon, delta)
    return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
