"""Quasar-convex AGD: evaluations to reach accuracy eps, against eps and against gamma; GD for contrast.

Claims checked (Hinder, Sidford & Sohoni, arXiv 1906.11985): the method needs
``O(gamma^-1 eps^-1/2 log(...))`` function and gradient evaluations, gradient descent ``O(eps^-1)``.

Problems: the quadratic ``f(x) = 1/2 sum_j lambda_j (x_j - 1)^2`` with ``lambda`` log-spaced in
``[1e-8, 1]`` from ``x0 = 0``: equal initial error on log-spaced eigenvalues puts mass ``~ 1/lambda`` near
zero, the instance on which both worst-case rates are attained (GD's gap ``~ 1/(2k)``, AGD's ``~ log/k^2``)
for ``k`` well below ``sqrt(kappa)``; and its quasar-convex versions ``sum_j lambda_j/2 h_gamma(x_j - 1)``
(:func:`memopt.harness.problems.quasar.bump`, exactly gamma-quasar-convex, ``L = 1``), which start at the
non-convex shoulder ``|z| = 1`` of every coordinate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from memopt.accelerated.quasar_agd import QuasarAGD
from memopt.harness.experiments.common import Options, Study, StudyResult, figure, loglog_slope
from memopt.harness.problems.quasar import bump_problem, log_spaced, sine_problem

Objective = Callable[[torch.Tensor], torch.Tensor]


def agd_evaluations(
    value: Objective, x0: torch.Tensor, f_star: float, targets: Sequence[float], max_evaluations: int, **kwargs
) -> tuple[dict[float, int], dict[str, int]]:
    """Closure evaluations QuasarAGD(**kwargs) needs to first reach ``f - f* <= eps`` for each target.

    The gap is checked at ``x_k`` after every step (that check is not counted). Also returns how the line
    searches ended (counts of "guess", "bisection", ...).
    """
    x = x0.clone().requires_grad_()
    optimizer = QuasarAGD([x], **kwargs)
    count = 0

    def closure():
        nonlocal count
        count += 1
        optimizer.zero_grad()
        loss = value(x)
        loss.backward()
        return loss

    hits: dict[float, int] = {}
    how: dict[str, int] = {}
    while count < max_evaluations and len(hits) < len(targets):
        optimizer.step(closure)
        how[optimizer.last_search.how] = how.get(optimizer.last_search.how, 0) + 1
        gap = float(value(x.detach())) - f_star
        for eps in targets:
            if eps not in hits and gap <= eps:
                hits[eps] = count
    return hits, how


def gd_evaluations(
    value: Objective, x0: torch.Tensor, f_star: float, targets: Sequence[float], lr: float, max_evaluations: int
) -> dict[float, int]:
    """Gradient evaluations gradient descent with step ``lr`` needs to reach each target."""
    x = x0.clone().requires_grad_()
    hits: dict[float, int] = {}
    for count in range(1, max_evaluations + 1):
        x.grad = None
        loss = value(x)
        loss.backward()
        with torch.no_grad():
            x -= lr * x.grad
            gap = float(value(x)) - f_star
        for eps in targets:
            if eps not in hits and gap <= eps:
                hits[eps] = count
        if len(hits) == len(targets):
            break
    return hits


def log_spaced_quadratic(dim: int, low: float = 1e-8) -> tuple[Objective, torch.Tensor, torch.Tensor]:
    """``(f, lambda, center)`` of ``f(x) = 1/2 sum lambda_j (x_j - 1)^2`` (module docstring)."""
    lam = log_spaced(dim, low, 1.0)
    center = torch.ones(dim, dtype=torch.float64)
    return (lambda x: 0.5 * (lam * (x - center) ** 2).sum()), lam, center


def _fit(hits: dict[float, int], targets: Sequence[float]) -> float:
    xs = [e for e in targets if e in hits]
    return loglog_slope(xs, [hits[e] for e in xs])


def run(options: Options) -> StudyResult:
    dim = 200
    value, lam, center = log_spaced_quadratic(dim)
    x0 = torch.zeros(dim, dtype=torch.float64)
    agd_targets = [10 ** (-k / 4) for k in range(4, 13 if options.quick else 21)]
    gd_targets = [e for e in agd_targets if e >= (1e-3 if options.quick else 1e-4)]
    agd_hits, agd_how = agd_evaluations(value, x0, 0.0, agd_targets, 50_000, lr=1.0, gamma=1.0)
    gd_hits = gd_evaluations(value, x0, 0.0, gd_targets, 1.0, 400_000)
    agd_slope, gd_slope = _fit(agd_hits, agd_targets), _fit(gd_hits, gd_targets)

    gammas = [1.0, 0.5, 0.25, 0.125] if not options.quick else [1.0, 0.25]
    gamma_targets = [10 ** (-k / 4) for k in range(4, 13)]
    by_gamma = {}
    for gamma in gammas:
        problem = bump_problem(gamma, lam / 2, center)
        hits, how = agd_evaluations(problem.value, x0, 0.0, gamma_targets, 100_000, lr=1 / problem.L, gamma=gamma)
        by_gamma[gamma] = {"hits": hits, "line_search": how, "L": problem.L}
    eps_gamma = gamma_targets[-1]
    gamma_slope = loglog_slope([1 / g for g in gammas], [by_gamma[g]["hits"][eps_gamma] for g in gammas])

    # the non-convex z^2 + 3 sin^2 z sum (gamma ~ 0.496): f after fixed iteration counts, AGD against GD
    generator = torch.Generator().manual_seed(0)
    weights = log_spaced(20, 1e-3, 1.0)
    sine = sine_problem(weights, torch.zeros(20, dtype=torch.float64))
    sine_x0 = (torch.rand(20, generator=generator, dtype=torch.float64) * 12 - 6).requires_grad_()
    checkpoints = [100, 500] if options.quick else [100, 500, 2000]
    sine_rows = _sine_runs(sine, sine_x0, checkpoints)

    fig, (ax1, ax2) = figure(2)
    ax1.loglog(list(agd_hits), list(agd_hits.values()), "o-", label=f"quasar AGD, gamma=1 (slope {agd_slope:.2f})")
    ax1.loglog(list(gd_hits), list(gd_hits.values()), "s-", label=f"GD, lr=1/L (slope {gd_slope:.2f})")
    ax1.invert_xaxis()
    ax1.set(xlabel="eps (f - f*)", ylabel="function+gradient evaluations", title="log-spaced quadratic, d=200")
    ax1.legend()
    for gamma in gammas:
        hits = by_gamma[gamma]["hits"]
        ax2.loglog(list(hits), list(hits.values()), "o-", label=f"gamma={gamma}")
    ax2.invert_xaxis()
    ax2.set(
        xlabel="eps", ylabel="evaluations", title=f"gamma-quasar-convex bump sums (1/gamma slope {gamma_slope:.2f})"
    )
    ax2.legend()
    lines = [
        f"quasar AGD (gamma=1) evaluations vs eps: fitted log-log slope {agd_slope:.3f} "
        f"(eps {agd_targets[0]:.0e}..{agd_targets[-1]:.0e}: {agd_hits[agd_targets[0]]}..{agd_hits[agd_targets[-1]]})",
        f"gradient descent vs eps: slope {gd_slope:.3f} "
        f"(eps {gd_targets[0]:.0e}..{gd_targets[-1]:.0e}: {gd_hits[gd_targets[0]]}..{gd_hits[gd_targets[-1]]})",
        f"line search outcomes on the quadratic: {agd_how}",
        f"evaluations to eps={eps_gamma:.0e} on exactly gamma-quasar-convex sums, by gamma: "
        + ", ".join(f"{g}: {by_gamma[g]['hits'][eps_gamma]}" for g in gammas)
        + f"; fitted exponent of 1/gamma {gamma_slope:.2f}",
    ]
    for row in sine_rows:
        lines.append(
            f"x^2+3sin^2x sum (gamma={sine.gamma:.4f}), {row['iterations']} iterations: quasar AGD f={row['agd']:.2e} "
            f"({row['agd_evaluations']} evaluations), GD f={row['gd']:.2e}"
        )
    data = {
        "quadratic": {
            "dim": dim,
            "agd": agd_hits,
            "gd": gd_hits,
            "agd_slope": agd_slope,
            "gd_slope": gd_slope,
            "line_search": agd_how,
        },
        "gamma": {str(g): v for g, v in by_gamma.items()},
        "gamma_exponent": gamma_slope,
        "sine_quadratic": {"gamma": sine.gamma, "rows": sine_rows},
    }
    return StudyResult(_stringify(data), fig, lines)


def _sine_runs(problem, x0: torch.Tensor, checkpoints: Sequence[int]) -> list[dict]:
    rows = []
    x = x0.detach().clone().requires_grad_()
    optimizer = QuasarAGD([x], lr=1 / problem.L, gamma=problem.gamma, eps=1e-10)
    count = 0

    def closure():
        nonlocal count
        count += 1
        optimizer.zero_grad()
        loss = problem.value(x)
        loss.backward()
        return loss

    y = x0.detach().clone()
    for k in range(1, max(checkpoints) + 1):
        optimizer.step(closure)
        y = y - problem.grad(y) / problem.L
        if k in checkpoints:
            rows.append(
                {
                    "iterations": k,
                    "agd": float(problem.value(x.detach())),
                    "agd_evaluations": count,
                    "gd": float(problem.value(y)),
                }
            )
    return rows


def _stringify(value):
    """JSON needs string keys."""
    if isinstance(value, dict):
        return {str(k): _stringify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


STUDY = Study("quasar", "quasar-convex AGD: evaluations vs eps (against GD) and vs gamma", run)
