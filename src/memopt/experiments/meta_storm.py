"""META-STORM against STORM+ and SGD on a noisy non-convex finite sum.

Measure: stochastic (minibatch) gradients until the *full* gradient norm first falls below a target, for
several seeds (the minibatch sequence differs per seed; the problem is fixed). A STORM step costs two
minibatch gradients (current and previous iterate), SGD one. Each method gets a small learning-rate grid
and is reported at the rate with the smallest median cost (ties broken by the final gradient norm).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from memopt.accelerated.storm import MetaSTORM, STORMPlus
from memopt.experiments.common import Options, Study, StudyResult, figure, median
from memopt.problems.nonconvex import NoisyNonconvexSum, noisy_nonconvex_sum

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


def run(options: Options) -> StudyResult:
    problem = noisy_nonconvex_sum(seed=0)
    budget = 2_000 if options.quick else 12_000
    batch, every = 8, 50
    g0 = float(problem.full_grad(torch.zeros(problem.dim, dtype=torch.float64)).norm())
    fractions = (0.25, 0.2, 0.15)
    targets = [f * g0 for f in fractions]
    seeds = list(range(options.seeds))
    methods = dict(list(METHODS.items())[:3]) if options.quick else METHODS
    results: dict[str, dict] = {}
    for name, (factory, grid, needs_closure) in methods.items():
        per_lr = {}
        for lr in grid if not options.quick else grid[1:2]:
            traces = [trajectory(problem, factory(lr), needs_closure, s, budget, batch, every) for s in seeds]
            cost = [first_below(t, targets[1]) for t in traces]
            finite = [c for c in cost if c is not None]
            per_lr[lr] = {
                "traces": traces,
                "median_cost": median(finite) if len(finite) == len(cost) else math.inf,
                "final": median([t[-1][1] for t in traces]),
            }
        best = min(per_lr, key=lambda lr: (per_lr[lr]["median_cost"], per_lr[lr]["final"]))
        results[name] = {"best_lr": best, "per_lr": per_lr}
    fig, (ax1, ax2) = figure(2)
    lines = [
        f"noisy non-convex finite sum: n={problem.n}, d={problem.dim}, batch {batch}, budget {budget} stochastic "
        f"gradients, {len(seeds)} seeds; ||grad F(x0)|| = {g0:.4f}; targets = {', '.join(f'{f:g}' for f in fractions)} "
        "x ||grad F(x0)||",
    ]
    summary = {}
    for color_index, (name, result) in enumerate(results.items()):
        best = result["per_lr"][result["best_lr"]]
        row = {"lr": result["best_lr"], "final_median_grad_norm": best["final"]}
        costs_text = []
        for fraction, target in zip(fractions, targets):
            costs = [first_below(t, target) for t in best["traces"]]
            reached = [c for c in costs if c is not None]
            row[f"cost_{fraction:g}"] = costs
            med = median(reached) if len(reached) == len(costs) else None
            costs_text.append(
                f"{fraction:g}: {'median ' + str(int(med)) if med is not None else 'not reached by all'} "
                f"({len(reached)}/{len(costs)} seeds; {costs})"
            )
        summary[name] = row
        lines.append(
            f"{name} (lr={result['best_lr']}): final median ||grad F|| {best['final']:.4f}; " + "; ".join(costs_text)
        )
        color = f"C{color_index}"
        for i, t in enumerate(best["traces"]):
            ax1.semilogy(
                [n for n, _ in t],
                [g for _, g in t],
                color=color,
                alpha=0.6,
                label=f"{name} lr={result['best_lr']}" if i == 0 else None,
            )
        lrs = list(result["per_lr"])
        ax2.semilogx(lrs, [result["per_lr"][lr]["final"] for lr in lrs], "o-", color=color, label=name)
    for target in targets:
        ax1.axhline(target, ls=":", c="gray")
    ax1.set(xlabel="stochastic gradients", ylabel="||grad F(x)||", title="best lr per method, all seeds")
    ax1.legend(fontsize=7)
    ax2.set(xlabel="lr", ylabel="median final ||grad F||", title=f"after {budget} stochastic gradients")
    ax2.legend(fontsize=7)
    data = {
        "problem": {"n": problem.n, "dim": problem.dim, "lam": problem.lam, "batch": batch, "budget": budget},
        "grad_norm_x0": g0,
        "targets": targets,
        "summary": summary,
        "runs": {
            name: {str(lr): {"traces": v["traces"], "final": v["final"]} for lr, v in r["per_lr"].items()}
            for name, r in results.items()
        },
    }
    return StudyResult(data, fig, lines)


STUDY = Study("meta_storm", "META-STORM vs STORM+ and SGD: stochastic gradients to a gradient-norm target", run)
