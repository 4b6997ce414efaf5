"""META-STORM against STORM+ and SGD on a noisy non-convex finite sum.

Measure: stochastic (minibatch) gradients until the *full* gradient norm first falls below a target, for
several seeds (the minibatch sequence differs per seed; the problem is fixed). A STORM step costs two
minibatch gradients (current and previous iterate), SGD one. Each method gets a small learning-rate grid;
for each target it is reported at the rate whose seeds all reach the target with the smallest median cost,
and the final gradient norm at the rate where it is smallest (tuning per target favours every method
equally).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from memopt.accelerated.storm import MetaSTORM, STORMPlus
from memopt.harness.experiments.common import Options, Study, StudyResult, figure, median
from memopt.harness.problems.nonconvex import NoisyNonconvexSum, noisy_nonconvex_sum

Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

METHODS: dict[str, tuple[Callable[[float], Factory], tuple[float, ...], bool]] = {
    # name: (factory of lr, lr grid, needs closure)
    "SGD": (lambda lr: lambda p: torch.optim.SGD(p, lr=lr), (0.003, 0.01, 0.03), False),
    "STORM+": (lambda lr: lambda p: STORMPlus(p, lr=lr), (0.1, 0.3, 1.0), True),
    "META-STORM": (lambda lr: lambda p: MetaSTORM(p, lr=lr), (0.1, 0.3, 1.0), True),
    "META-STORM-SG": (lambda lr: lambda p: MetaSTORM(p, lr=lr, variant="sg"), (0.1, 0.3, 1.0), True),
    "META-STORM coord+EMA": (
        lambda lr: lambda p: MetaSTORM(p, lr=lr, per_coordinate=True, ema=True, bias_correction=True),
        (0.003, 0.01, 0.03),
        True,
    ),
}


def trajectory(
    problem: NoisyNonconvexSum, make: Factory, needs_closure: bool, seed: int, budget: int, batch: int, every: int
) -> list[tuple[int, float]]:
    """``(stochastic gradients used, ||grad F(x)||)`` along a run from ``x = 0``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.zeros(problem.dim, dtype=torch.float64, requires_grad=True)
    optimizer = make([x])
    used = 0
    trace = [(0, float(problem.full_grad(x.detach()).norm()))]
    while used < budget:
        index = problem.sample(batch, generator)

        def closure(index=index):
            nonlocal used
            used += 1
            optimizer.zero_grad()
            loss = problem.loss(x, index)
            loss.backward()
            return loss

        if needs_closure:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        if used - trace[-1][0] >= every or used >= budget:
            norm = float(problem.full_grad(x.detach()).norm())
            trace.append((used, norm if math.isfinite(norm) else math.inf))
    return trace


def first_below(trace: list[tuple[int, float]], target: float) -> int | None:
    return next((n for n, g in trace if g <= target), None)


def best_for_target(per_lr: dict[float, list], target: float) -> dict:
    """The lr whose seeds all reach ``target`` with the smallest median cost (or the lr reaching it most often)."""
    rows = []
    for lr, traces in per_lr.items():
        costs = [first_below(t, target) for t in traces]
        reached = [c for c in costs if c is not None]
        rows.append(
            {
                "lr": lr,
                "costs": costs,
                "reached": len(reached),
                "median": median(reached) if len(reached) == len(costs) else None,
            }
        )
    complete = [r for r in rows if r["median"] is not None]
    if complete:
        return min(complete, key=lambda r: r["median"])
    return max(rows, key=lambda r: r["reached"])


def run(options: Options) -> StudyResult:
    problem = noisy_nonconvex_sum(seed=0)
    budget = 2_000 if options.quick else 12_000
    batch, every = 8, 50
    g0 = float(problem.full_grad(torch.zeros(problem.dim, dtype=torch.float64)).norm())
    fractions = (0.25, 0.2, 0.15)
    targets = [f * g0 for f in fractions]
    seeds = list(range(options.seeds))
    methods = dict(list(METHODS.items())[:3]) if options.quick else METHODS
    results: dict[str, dict[float, list]] = {}  # method -> lr -> traces (one per seed)
    for name, (factory, grid, needs_closure) in methods.items():
        results[name] = {
            lr: [trajectory(problem, factory(lr), needs_closure, s, budget, batch, every) for s in seeds]
            for lr in (grid if not options.quick else grid[1:2])
        }
    lines = [
        f"noisy non-convex finite sum: n={problem.n}, d={problem.dim}, batch {batch}, budget {budget} stochastic "
        f"gradients, seeds {seeds}; ||grad F(x0)|| = {g0:.4f}; each method at its best lr of its grid, per target",
    ]
    summary: dict[str, dict] = {}
    for name, per_lr in results.items():
        summary[name] = {"grid": list(per_lr)}
        for fraction, target in zip(fractions, targets):
            best = best_for_target(per_lr, target)
            summary[name][f"target_{fraction:g}"] = best
        finals = {lr: median([t[-1][1] for t in traces]) for lr, traces in per_lr.items()}
        best_final = min(finals, key=finals.get)
        summary[name]["final"] = {"lr": best_final, "median_grad_norm": finals[best_final], "by_lr": finals}
    for fraction, target in zip(fractions, targets):
        parts = []
        for name in results:
            best = summary[name][f"target_{fraction:g}"]
            if best["median"] is None:
                parts.append(f"{name}: not reached by all seeds (best {best['reached']}/{len(seeds)}, lr={best['lr']})")
            else:
                parts.append(f"{name}: {int(best['median'])} (lr={best['lr']}; {best['costs']})")
        lines.append(
            f"||grad F|| <= {fraction:g} x ||grad F(x0)|| = {target:.4f}, median stochastic gradients: "
            + "; ".join(parts)
        )
    lines.append(
        f"median ||grad F|| after {budget} stochastic gradients (best lr): "
        + "; ".join(
            f"{n}: {summary[n]['final']['median_grad_norm']:.4f} (lr={summary[n]['final']['lr']})" for n in results
        )
    )
    fig, (ax1, ax2) = figure(2)
    for color_index, (name, per_lr) in enumerate(results.items()):
        color = f"C{color_index}"
        lr = summary[name]["final"]["lr"]
        for i, t in enumerate(per_lr[lr]):
            ax1.semilogy(
                [n for n, _ in t],
                [g for _, g in t],
                color=color,
                alpha=0.6,
                label=f"{name} lr={lr}" if i == 0 else None,
            )
        lrs = list(per_lr)
        ax2.semilogx(lrs, [summary[name]["final"]["by_lr"][x] for x in lrs], "o-", color=color, label=name)
    for target in targets:
        ax1.axhline(target, ls=":", c="gray")
    ax1.set(xlabel="stochastic gradients", ylabel="||grad F(x)||", title="lr with the best final norm, all seeds")
    ax1.legend(fontsize=7)
    ax2.set(xlabel="lr", ylabel="median final ||grad F||", title=f"after {budget} stochastic gradients")
    ax2.legend(fontsize=7)
    data = {
        "problem": {"n": problem.n, "dim": problem.dim, "lam": problem.lam, "batch": batch, "budget": budget},
        "grad_norm_x0": g0,
        "targets": targets,
        "summary": summary,
        "runs": {name: {str(lr): traces for lr, traces in per_lr.items()} for name, per_lr in results.items()},
    }
    return StudyResult(data, fig, lines)


STUDY = Study("meta_storm", "META-STORM vs STORM+ and SGD: stochastic gradients to a gradient-norm target", run)
