"""Shuffle-private SCO: excess risk against epsilon on logistic regression, between the central and local models.

Each user holds one example (features in the unit ball, so gradients have norm <= 1). One-pass mini-batch SGD
(:func:`memopt.privacy.sco.private_sgd`) aggregates every batch's gradients by: the exact sum (non-private),
the central Gaussian mechanism, the shuffle summation protocol (calibrated by the derived accountant), or local
Gaussian randomizers. Excess risk = risk on a fresh sample of 40 000 examples minus its minimum. The step size
is the best of a small grid for each method and epsilon (chosen on the same evaluation sample, as is usual for
such plots; it is not itself private).

Claims checked (Cheu, Joseph, Mao & Peng, ICLR 2022, abstract: shuffle guarantees "significantly improve on
those of the local model and sometimes match those of the central model"): at every epsilon, the shuffle
curve lies between the central and the local curves; the per-round noise of the shuffle sum does not grow with
the batch size (central-like), while the local model's grows like sqrt(batch).
"""

from __future__ import annotations

import math

import torch

from memopt.harness.experiments.common import Options, Study, StudyResult, figure
from memopt.harness.problems.private_logistic import unit_ball_logistic
from memopt.privacy.baselines import CentralGaussian, ExactSum, LocalGaussian, ShuffleSum
from memopt.privacy.sco import private_sgd

DELTA = 1e-6
RADIUS = 6.0


def run(options: Options) -> StudyResult:
    users, dim, batch = (8192, 5, 256) if options.quick else (65536, 5, 256)
    epsilons = [1.0, 4.0] if options.quick else [0.5, 1.0, 2.0, 4.0, 8.0]
    lrs = [2.0, 8.0] if options.quick else [1.0, 2.0, 4.0, 8.0, 16.0]
    seeds = list(range(options.seeds))
    theta_true = torch.tensor([3.0, -2.0, 1.0, 0.5, -0.5], dtype=torch.float64)[:dim]
    test = unit_ball_logistic(40000, dim, theta_true, seed=10_000)
    theta_star = test.minimizer()
    risk_star = test.risk(theta_star)
    trains = [unit_ball_logistic(users, dim, theta_true, seed=s) for s in seeds]

    def excess(aggregator) -> tuple[float, float]:
        """Best mean excess risk over the lr grid, and its lr."""
        best = (math.inf, math.nan)
        for lr in lrs:
            risks = []
            for seed, train in zip(seeds, trains):
                g = torch.Generator().manual_seed(1000 + seed)
                out = private_sgd(train.per_user_grads, users, dim, batch, lr, aggregator, 1.0, RADIUS, g)
                risks.append(test.risk(out.theta) - risk_star)
            best = min(best, (sum(risks) / len(risks), lr))
        return best

    nonprivate, nonprivate_lr = excess(ExactSum())
    rows = []
    for eps in epsilons:
        central, local = CentralGaussian(1.0, eps, DELTA), LocalGaussian(1.0, eps, DELTA)
        shuffled = ShuffleSum(1.0, eps, DELTA, batch, dim)
        row = {"epsilon": eps, "bits": shuffled.params.bits, "grid": shuffled.params.grid}
        row["composition"] = shuffled.guarantee.composition
        for key, agg in (("central", central), ("shuffle", shuffled), ("local", local)):
            row[key], row[f"{key}_lr"] = excess(agg)
            row[f"{key}_noise_sd"] = math.sqrt(agg.noise_variance(batch))
        rows.append(row)
    # per-round noise against the batch size at epsilon = 1
    sizes = [256, 1024, 4096]
    noise = []
    for m in sizes:
        noise.append(
            {
                "batch": m,
                "central": CentralGaussian(1.0, 1.0, DELTA).sigma,
                "shuffle": math.sqrt(ShuffleSum(1.0, 1.0, DELTA, m, dim).noise_variance(m)),
                "local": math.sqrt(LocalGaussian(1.0, 1.0, DELTA).noise_variance(m)),
            }
        )

    fig, (ax1, ax2) = figure(2)
    for key, style in (("central", "o-"), ("shuffle", "s-"), ("local", "^-")):
        ax1.loglog([r["epsilon"] for r in rows], [max(r[key], 1e-8) for r in rows], style, label=key)
    ax1.axhline(max(nonprivate, 1e-8), ls=":", c="gray", label="non-private SGD")
    ax1.set(
        xlabel="epsilon (delta = 1e-6)",
        ylabel="excess risk",
        title=f"logistic regression, n={users}, d={dim}, batch={batch}",
    )
    ax1.legend()
    for key, style in (("central", "o-"), ("shuffle", "s-"), ("local", "^-")):
        ax2.loglog(sizes, [r[key] for r in noise], style, label=key)
    ax2.set(xlabel="users per round (batch)", ylabel="noise sd of the sum, per coordinate", title="epsilon = 1")
    ax2.legend()

    between = all(r["central"] <= r["shuffle"] <= r["local"] for r in rows)
    shuffle_growth = noise[-1]["shuffle"] / noise[0]["shuffle"]
    local_growth = noise[-1]["local"] / noise[0]["local"]
    claims = {
        "shuffle_between_central_and_local": between,
        "shuffle_noise_flat_in_batch": shuffle_growth < 1.2,
        "local_noise_grows_sqrt_batch": abs(local_growth / math.sqrt(sizes[-1] / sizes[0]) - 1) < 1e-9,
    }
    lines = [
        f"n={users} users, d={dim}, batch {batch} ({users // batch} rounds), delta={DELTA:g}, {len(seeds)} seeds; "
        f"non-private excess risk {nonprivate:.2e} (lr {nonprivate_lr:g})"
    ]
    for r in rows:
        lines.append(
            f"  eps={r['epsilon']:g}: central {r['central']:.2e} | shuffle {r['shuffle']:.2e} | local {r['local']:.2e}"
            f"   (noise sd per coord: {r['central_noise_sd']:.1f} / {r['shuffle_noise_sd']:.1f} / "
            f"{r['local_noise_sd']:.1f}; shuffle g={r['grid']}, b={r['bits']}, {r['composition']} composition)"
        )
    lines.append(
        "  noise sd at eps=1 for batch "
        + ", ".join(f"{q['batch']}: {q['central']:.1f}/{q['shuffle']:.1f}/{q['local']:.1f}" for q in noise)
        + " (central/shuffle/local)"
    )
    lines.append("claims: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in claims.items()))
    data = {
        "rows": rows,
        "nonprivate": nonprivate,
        "noise_vs_batch": noise,
        "claims": claims,
        "risk_star": risk_star,
        "settings": {"users": users, "dim": dim, "batch": batch, "delta": DELTA, "radius": RADIUS, "lrs": lrs},
    }
    return StudyResult(data, fig, lines)


STUDY = Study(
    "shuffle_private",
    "shuffle-private SCO: excess risk vs epsilon on logistic regression, central / shuffle / local",
    run,
)
