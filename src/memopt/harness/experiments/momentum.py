"""Momentum at small learning rates: SGD at lr eta/(1-beta) against SGD with momentum beta at lr eta.

Claim (Wang, Malladi, Wang, Lyu & Li, ICLR 2024, arXiv 2307.15196): when the learning rate is small and
gradient noise dominates, SGD with momentum (torch form, lr ``eta``, momentum ``beta``) behaves like plain
SGD at the effective rate ``eta/(1-beta)`` (:func:`memopt.accelerated.effective_lr`); they part ways when
the rate is large compared with the curvature. Setting: a 10-32-1 tanh MLP fitting a random tanh teacher
with label noise 0.5 (512 points), batch 4, squared loss, beta = 0.9, the same minibatch sequence for both
optimizers of a pair, training for the same "time" ``T = eta_eff * steps = 20``; full-data loss recorded at
21 equally spaced times.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from memopt.accelerated.momentum import effective_lr
from memopt.harness.experiments.common import Options, Study, StudyResult, figure, mean_and_se

BETA, HORIZON, BATCH = 0.9, 20.0, 4


def teacher_data(seed: int = 0, n: int = 512, dim: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator)
    teacher = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, 1))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
        y = teacher(x).squeeze(1) + 0.5 * torch.randn(n, generator=generator)
    return x, y


def train(x: torch.Tensor, y: torch.Tensor, lr: float, momentum: float, steps: int, seed: int) -> list[float]:
    """Full-data loss at 21 equally spaced points of a run (the first before training)."""
    torch.manual_seed(1000 + seed)
    net = nn.Sequential(nn.Linear(x.shape[1], 32), nn.Tanh(), nn.Linear(32, 1))
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed)
    marks = {round(steps * i / 20) for i in range(21)}

    def full_loss() -> float:
        with torch.no_grad():
            value = float(((net(x).squeeze(1) - y) ** 2).mean() / 2)
        return value if math.isfinite(value) else math.inf

    curve = [full_loss()]
    for step in range(1, steps + 1):
        index = torch.randint(0, len(y), (BATCH,), generator=generator)
        loss = ((net(x[index]).squeeze(1) - y[index]) ** 2).mean() / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in marks:
            curve.append(full_loss())
    return curve


def _diverged(loss: float) -> bool:
    """A final loss above 1e3 (the initial loss is about 1) or not finite."""
    return not math.isfinite(loss) or loss > 1e3


def run(options: Options) -> StudyResult:
    x, y = teacher_data()
    etas = [0.01, 0.1, 0.3] if options.quick else [0.003, 0.01, 0.03, 0.1, 0.3]
    seeds = list(range(options.seeds))
    rows, curves = [], {}
    for eta_eff in etas:
        steps = round(HORIZON / eta_eff)
        lr_momentum = eta_eff * (1 - BETA)
        assert abs(effective_lr(lr_momentum, BETA) - eta_eff) < 1e-12
        sgd = [train(x, y, eta_eff, 0.0, steps, s) for s in seeds]
        sgdm = [train(x, y, lr_momentum, BETA, steps, s) for s in seeds]
        curves[eta_eff] = {"sgd": sgd, "sgdm": sgdm}
        final_sgd, final_sgdm = [c[-1] for c in sgd], [c[-1] for c in sgdm]
        finite = not any(_diverged(v) for v in final_sgd + final_sgdm)
        gaps = [abs(a - b) / max(min(a, b), 1e-12) for a, b in zip(final_sgd, final_sgdm)] if finite else [math.inf]
        diffs = [a - b for a, b in zip(final_sgd, final_sgdm)] if finite else [math.inf]
        mean_diff, se_diff = mean_and_se(diffs) if finite else (math.inf, math.nan)
        rows.append(
            {
                "eta_eff": eta_eff,
                "steps": steps,
                "sgd_final": final_sgd,
                "sgdm_final": final_sgdm,
                "mean_relative_gap": sum(gaps) / len(gaps),
                "mean_paired_difference": mean_diff,
                "se_paired_difference": se_diff,
            }
        )
    fig, (ax1, ax2, ax3) = figure(3, width=4.6)
    times = [HORIZON * i / 20 for i in range(21)]
    for ax, eta_eff in ((ax1, etas[0]), (ax2, etas[-1])):
        for name, style in (("sgd", "-"), ("sgdm", "--")):
            for j, c in enumerate(curves[eta_eff][name]):
                shown = [v if math.isfinite(v) and v < 1e6 else float("nan") for v in c]
                ax.semilogy(
                    times,
                    shown,
                    style,
                    color=f"C{j}",
                    label=("SGD lr=eta_eff" if name == "sgd" else f"SGDM lr=eta_eff(1-beta), beta={BETA}")
                    if j == 0
                    else None,
                )
        ax.set(xlabel="time = eta_eff x steps", ylabel="full-data loss", title=f"eta_eff = {eta_eff}")
        ax.legend(fontsize=7)
    ax3.loglog(
        [r["eta_eff"] for r in rows],
        [max(r["mean_relative_gap"], 1e-6) if math.isfinite(r["mean_relative_gap"]) else 1e3 for r in rows],
        "o-",
    )
    ax3.set(xlabel="eta_eff", ylabel="mean relative gap of final loss", title="SGD vs SGDM (1e3 = diverged)")
    lines = [f"10-32-1 tanh MLP, teacher with noise 0.5, batch {BATCH}, beta={BETA}, time {HORIZON}, seeds {seeds}"]
    for r in rows:
        if math.isfinite(r["mean_relative_gap"]):
            verdict = (
                f"mean final loss SGD {sum(r['sgd_final']) / len(seeds):.4f} vs SGDM "
                f"{sum(r['sgdm_final']) / len(seeds):.4f}; paired difference {r['mean_paired_difference']:+.4f} "
                f"+- {r['se_paired_difference']:.4f} (SE); mean relative gap {100 * r['mean_relative_gap']:.2f}%"
            )
        else:
            sgd_bad = sum(_diverged(v) for v in r["sgd_final"])
            sgdm_bad = sum(_diverged(v) for v in r["sgdm_final"])
            verdict = (
                f"separated: SGD diverged in {sgd_bad}/{len(seeds)} seeds, SGDM in {sgdm_bad}/{len(seeds)}; "
                f"final SGDM losses {[round(v, 3) for v in r['sgdm_final']]}"
            )
        lines.append(f"eta_eff={r['eta_eff']} ({r['steps']} steps): {verdict}")
    return StudyResult({"rows": rows, "curves": {str(k): v for k, v in curves.items()}, "beta": BETA}, fig, lines)


STUDY = Study("momentum", "momentum at small lr: SGD(eta/(1-beta)) vs SGDM(beta, eta) on a small network", run)
