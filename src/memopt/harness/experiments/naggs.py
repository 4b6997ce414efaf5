"""NAG-GS on quadratics: heavy-ball equivalence, contraction against alpha, stability limit; logistic regression.

Claims checked (arXiv 2209.14937 and the authors' notebooks): with ``gamma = mu`` NAG-GS is heavy ball
with ``lr = alpha^2/(mu (1+alpha)^2)``, ``momentum = (1+alpha)^-2``; for ``alpha <= alpha_c`` it contracts
by ``1/(1+alpha)`` per step; above the stability limit it diverges.
"""

from __future__ import annotations

import math

import torch

from memopt.accelerated.nag_gs import NAGGS, heavy_ball_coefficients, optimal_step, stability_limit
from memopt.harness.experiments.common import Options, Study, StudyResult, figure
from memopt.harness.problems.logistic import logistic_regression
from memopt.harness.problems.quadratic import Quadratic


def run_on_quadratic(problem: Quadratic, make, steps: int) -> torch.Tensor:
    """Iterates ``x_1..x_steps`` of ``make([x])`` from ``x0 = 0`` (float64, exact gradients)."""
    x = torch.zeros(problem.dim, dtype=torch.float64, requires_grad=True)
    optimizer = make([x])
    iterates = []
    for _ in range(steps):
        x.grad = problem.grad(x.detach())
        optimizer.step()
        iterates.append(x.detach().clone())
    return torch.stack(iterates)


def contraction(problem: Quadratic, alpha: float, steps: int, gamma: float | None = None) -> float:
    """Per-step factor of ``||x_k - x*||`` over the second half of ``steps`` (inf if it diverged)."""
    mu = problem.mu
    iterates = run_on_quadratic(
        problem, lambda p: NAGGS(p, lr=alpha, mu=mu, gamma=mu if gamma is None else gamma), steps
    )
    errors = (iterates - problem.minimizer).norm(dim=1)
    half = steps // 2
    if not torch.isfinite(errors[-1]) or errors[half - 1] == 0:
        return math.inf
    return float((errors[-1] / errors[half - 1]) ** (1.0 / (steps - half)))


def _heavy_ball_gap(problem: Quadratic, alpha: float, steps: int) -> float:
    mu = problem.mu
    lr, momentum = heavy_ball_coefficients(alpha, mu)
    ours = run_on_quadratic(problem, lambda p: NAGGS(p, lr=alpha, mu=mu, gamma=mu), steps)
    theirs = run_on_quadratic(problem, lambda p: torch.optim.SGD(p, lr=lr, momentum=momentum), steps)
    return float((ours - theirs).abs().max() / theirs.abs().max())


def _logistic_trace(steps: int) -> dict:
    problem = logistic_regression(n=500, dim=20, reg=1e-3, seed=0)
    L, mu = problem.L, problem.mu
    reference = torch.zeros(20, dtype=torch.float64, requires_grad=True)
    lbfgs = torch.optim.LBFGS(
        [reference],
        lr=1,
        max_iter=500,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        lbfgs.zero_grad()
        value = problem.value(reference)
        value.backward()
        return value

    lbfgs.step(closure)
    f_star = float(problem.value(reference.detach()))
    alpha = 0.9 * optimal_step(mu, L)
    traces = {}
    for name, make in (
        ("GD lr=1/L", lambda p: torch.optim.SGD(p, lr=1 / L)),
        (f"NAG-GS alpha=0.9 alpha_c={alpha:.4f}", lambda p: NAGGS(p, lr=alpha, mu=mu, gamma=mu)),
        ("NAG-GS gamma0=1 (gamma updated)", lambda p: NAGGS(p, lr=alpha, mu=mu, gamma=1.0)),
    ):
        w = torch.zeros(20, dtype=torch.float64, requires_grad=True)
        optimizer = make([w])
        gaps = []
        for _ in range(steps):
            w.grad = problem.grad(w.detach())
            optimizer.step()
            gaps.append(max(float(problem.value(w.detach())) - f_star, 1e-17))
        traces[name] = gaps
    return {"L": L, "mu": mu, "f_star": f_star, "traces": traces}


def run(options: Options) -> StudyResult:
    dim, mu, L = (20, 1e-3, 1.0)
    steps = 200 if options.quick else 600
    problem = Quadratic.with_spectrum(torch.linspace(mu, L, dim, dtype=torch.float64), seed=0)
    alpha_c, alpha_crit = optimal_step(mu, L), stability_limit(mu, L)
    gap = _heavy_ball_gap(problem, 0.5 * alpha_c, 300)
    factors = [0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.02, 1.05, 1.2]
    rows = []
    for factor in factors:
        alpha = factor * alpha_c
        rate = contraction(problem, alpha, steps)
        rows.append({"factor": factor, "alpha": alpha, "rate": rate, "theory": 1 / (1 + alpha)})
    kappa = L / mu
    logistic = _logistic_trace(150 if options.quick else 600)
    fig, (ax1, ax2) = figure(2)
    stable = [r for r in rows if r["rate"] < 1]
    diverged = [r for r in rows if not r["rate"] < 1]
    ax1.plot([r["alpha"] for r in stable], [r["rate"] for r in stable], "o", label="measured")
    ax1.plot([r["alpha"] for r in diverged], [1.0] * len(diverged), "rx", label="diverged")
    grid = [alpha_c * i / 100 for i in range(5, 106)]
    ax1.plot(grid, [1 / (1 + a) for a in grid], "-", label="1/(1+alpha)")
    ax1.axvline(alpha_c, ls="--", c="gray", label="alpha_c")
    ax1.axvline(alpha_crit, ls=":", c="red", label="stability limit")
    ax1.set(xlabel="alpha (lr)", ylabel="contraction per step", title=f"quadratic, kappa={kappa:.0f}, gamma=mu")
    ax1.legend()
    for name, gaps in logistic["traces"].items():
        ax2.semilogy(gaps, label=name)
    ax2.set(xlabel="step", ylabel="f - f*", title="logistic regression (n=500, d=20)")
    ax2.legend()
    at_09 = next(r for r in rows if r["factor"] == 0.9)
    lines = [
        f"heavy-ball equivalence (gamma0 = mu, float64, 300 steps): max relative deviation {gap:.2e}",
        f"alpha_c = {alpha_c:.6f}, stability limit = {alpha_crit:.6f} (kappa = {kappa:.0f})",
        f"at 0.9 alpha_c: contraction {at_09['rate']:.6f} vs 1/(1+alpha) = {at_09['theory']:.6f} "
        f"({100 * (at_09['rate'] / at_09['theory'] - 1):+.2f}%)",
    ]
    for r in rows:
        verdict = "diverges" if not math.isfinite(r["rate"]) or r["rate"] > 1 else f"{r['rate']:.5f}"
        lines.append(f"  alpha = {r['factor']:.2f} alpha_c: {verdict} (1/(1+alpha) = {r['theory']:.5f})")
    for name, gaps in logistic["traces"].items():
        lines.append(f"logistic: {name}: f - f* after {len(gaps)} steps = {gaps[-1]:.2e}")
    data = {
        "quadratic": {"dim": dim, "mu": mu, "L": L, "alpha_c": alpha_c, "stability_limit": alpha_crit, "rows": rows},
        "heavy_ball_max_relative_deviation": gap,
        "logistic": logistic,
    }
    return StudyResult(data, fig, lines)


STUDY = Study(
    "naggs", "NAG-GS: heavy-ball equivalence, contraction vs alpha, stability limit, logistic regression", run
)
