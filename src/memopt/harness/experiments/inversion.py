"""Network inversion by gradient descent, plain latent space vs a learned landscape (Liu et al., arXiv 2206.09027).

Claim: gradient descent through a generator's latent space is slow; descending instead in a learned space
``w`` mapped to the latent space by ``theta`` (trained on optimization trajectories so that descent on it is
short) reaches a given reconstruction error in far fewer iterations.

Setting (:mod:`memopt.harness.problems.inversion`): per seed, a VAE decoder (latent 8) trained on scikit-learn's
digits, 100 held-out digits inverted from the same random starts ``N(0, I)`` for :data:`ITERATIONS`
iterations. Arms: plain GD in the latent space at the landscape's step size (the paper's comparison: the
same descent, another space), plain GD and Adam at the best step size of a small grid (strong baselines), and
GD in the learned landscape. Reported: per target error, the median iterations over images (and the share
of images reaching it), the wall time to it (iterations x the arm's time per iteration), and the final error.
"""

from __future__ import annotations

import torch

from memopt.harness.experiments.common import Options, Study, StudyResult, figure, median
from memopt.harness.problems import inversion as inv

ITERATIONS = 200
TARGETS = (0.06, 0.04)  # per-pixel mean squared error (pixels in [0, 1]); a random start is at about 0.10
LANDSCAPE_LR = 1.0
GD_GRID = (1.0, 3.0, 10.0)
ADAM_GRID = (0.03, 0.1, 0.3)


def _summary(result: inv.Inversion, target: float) -> tuple[float | None, float]:
    """Median iterations to ``target`` over images (None if fewer than half reach it) and the share reaching it."""
    reached = result.iterations_to(target)
    share = sum(r is not None for r in reached) / len(reached)
    ordered = sorted(r if r is not None else float("inf") for r in reached)
    med = median(ordered)
    return (None if med == float("inf") else med), share


def _best(results: dict[float, inv.Inversion], target: float) -> float:
    """The grid value reaching ``target`` fastest (median iterations; then the lowest final median error)."""
    def key(lr: float):
        med, _ = _summary(results[lr], target)
        return (med if med is not None else float("inf"), median(results[lr].errors[-1]))

    return min(results, key=key)


def run_seed(seed: int, quick: bool) -> dict:
    generator_steps, rounds = (300, 20) if quick else (800, 80)
    images, iterations = (32, 60) if quick else (100, ITERATIONS)
    train, held_out = inv.digits(held_out=200, seed=seed)
    generator = inv.train_generator(train, generator_steps, seed)
    mapping = inv.train_landscape(generator, train, rounds, LANDSCAPE_LR, trajectory=10, seed=seed,
                                  updates_per_round=40)
    x = held_out[:images]
    start = torch.randn(images, generator.latent, generator=torch.Generator().manual_seed(100 + seed))
    gd = {lr: inv.invert(generator, x, start, "sgd", lr, iterations) for lr in GD_GRID}
    adam = {lr: inv.invert(generator, x, start, "adam", lr, iterations) for lr in ADAM_GRID}
    gd_best, adam_best = _best(gd, TARGETS[-1]), _best(adam, TARGETS[-1])
    arms = {
        f"latent GD, lr {LANDSCAPE_LR:g} (same step)": gd[LANDSCAPE_LR],
        f"latent GD, best lr {gd_best:g}": gd[gd_best],
        f"latent Adam, best lr {adam_best:g}": adam[adam_best],
        f"learned landscape GD, lr {LANDSCAPE_LR:g}": inv.invert(generator, x, start, "sgd", LANDSCAPE_LR, iterations,
                                                               mapping=mapping),
    }
    out = {}
    for name, result in arms.items():
        per_iter = result.seconds / iterations
        row = {"final_median_error": median(result.errors[-1]), "seconds_per_iteration": per_iter,
               "median_curve": [median(e) for e in result.errors]}
        for target in TARGETS:
            med, share = _summary(result, target)
            row[f"iterations_to_{target}"] = med
            row[f"share_reaching_{target}"] = share
            row[f"seconds_to_{target}"] = None if med is None else med * per_iter
        out[name] = row
    return out


def _fewer(rows: list[dict], target: float) -> bool:
    """Whether the last arm (the landscape) reaches ``target`` in fewer iterations than the first (same step)."""
    key = f"iterations_to_{target}"
    learned, plain = rows[-1][key], rows[0][key]
    return learned is not None and (plain is None or learned < plain)


def run(options: Options) -> StudyResult:
    seeds = list(range(options.seeds))
    per_seed = {seed: run_seed(seed, options.quick) for seed in seeds}
    names = list(per_seed[seeds[0]])
    lines = [f"sklearn digits, VAE decoder (latent 8), held-out images from random starts; targets {TARGETS} "
             f"(per-pixel MSE); seeds {seeds}; arm names from seed 0 (best lrs may differ per seed)"]
    for k, name in enumerate(names):
        rows = [list(per_seed[s].values())[k] for s in seeds]
        parts = []
        for target in TARGETS:
            its = [r[f"iterations_to_{target}"] for r in rows]
            secs = [r[f"seconds_to_{target}"] for r in rows]
            shares = [r[f"share_reaching_{target}"] for r in rows]
            sec_text = "/".join("-" if s is None else f"{1000 * s:.0f}" for s in secs)
            parts.append(f"to {target}: median iterations {its} (ms {sec_text}; share {[round(s, 2) for s in shares]})")
        finals = [round(r["final_median_error"], 4) for r in rows]
        lines.append(f"{name}: " + "; ".join(parts) + f"; final median error {finals}")
    landscape, same = names[-1], names[0]
    for target in TARGETS:
        faster = [s for s in seeds if _fewer(list(per_seed[s].values()), target)]
        lines.append(f"'{landscape}' reaches {target} in fewer iterations than '{same}' on seeds {faster} of {seeds}")

    fig, (ax1, ax2) = figure(2)
    for k, name in enumerate(names):
        for s in seeds:
            curve = list(per_seed[s].values())[k]["median_curve"]
            ax1.plot(curve, color=f"C{k}", alpha=0.7, label=name if s == seeds[0] else None)
            per_iter = list(per_seed[s].values())[k]["seconds_per_iteration"]
            ax2.plot([1000 * per_iter * t for t in range(len(curve))], curve, color=f"C{k}", alpha=0.7)
    for ax in (ax1, ax2):
        for target in TARGETS:
            ax.axhline(target, ls=":", c="gray")
        ax.set(yscale="log", ylabel="median per-pixel MSE (held-out digits)")
    ax1.set(xlabel="iteration", title="inversion of a VAE decoder")
    ax1.legend(fontsize=7)
    ax2.set(xlabel="wall time (ms, whole batch)", title="against wall time")
    return StudyResult({"targets": TARGETS, "per_seed": per_seed}, fig, lines)


STUDY = Study("inversion", "Landscape learning vs plain latent GD/Adam for inverting a digits generator", run)
