"""Accelerated SGD against SGD on ill-conditioned streaming least squares, per eigen-subspace.

Claims checked (Li, Deng, Wu, Zhou & Gu, ICLR 2024, arXiv 2311.14222): ASGD's bias error decays faster
than SGD's in the subspace of small eigenvalues and slower in that of large eigenvalues, and its variance
error is larger. Setting: ``d = 200``, ``H = diag(i^-2)``, one fresh sample per step, SGD and AccSGD with the
same short step ``delta``. Bias: no label noise, ``w0 - w* = (1, ..., 1)``. Variance: ``w0 = w*``, label
noise ``sigma = 1``. (For linear regression the two add up to the excess risk in expectation.) Head =
the 20 largest eigenvalues (``lambda >= 1/400``), tail = the rest; risks are averaged over seeds.
"""

from __future__ import annotations

import torch

from memopt.accelerated.asgd import ASGD, accsgd_to_four_parameter
from memopt.harness.experiments.common import Options, Study, StudyResult, figure
from memopt.harness.problems.least_squares import power_law_stream

DIM, HEAD, DELTA = 200, 20, 0.2
ACCSGD = {"kappa": 1000.0, "xi": 10.0, "small_const": 0.7}


def checkpoints(steps: int, count: int = 40) -> list[int]:
    points = sorted({max(1, round(steps ** (i / (count - 1)))) for i in range(count)})
    return points


def risks(make, seed: int, steps: int, w0: torch.Tensor, sigma: float) -> dict[str, list[float]]:
    """Head and tail excess risk at :func:`checkpoints` of one run."""
    stream = power_law_stream(DIM, 2.0, sigma=sigma)
    head = torch.arange(DIM) < HEAD
    generator = torch.Generator().manual_seed(seed)
    w = w0.clone().requires_grad_()
    optimizer = make([w])
    marks = set(checkpoints(steps))
    out: dict[str, list[float]] = {"head": [], "tail": []}
    for t in range(1, steps + 1):
        x, y = stream.sample(1, generator)
        w.grad = stream.gradient(w.detach(), x, y)
        optimizer.step()
        if t in marks:
            out["head"].append(stream.excess_risk(w.detach(), head))
            out["tail"].append(stream.excess_risk(w.detach(), ~head))
    return out


def _mean(runs: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    return {k: [sum(r[k][i] for r in runs) / len(runs) for i in range(len(runs[0][k]))] for k in runs[0]}


def run(options: Options) -> StudyResult:
    steps = 2_000 if options.quick else 10_000
    seeds = range(options.seeds)
    methods = {
        f"SGD lr={DELTA}": lambda p: torch.optim.SGD(p, lr=DELTA),
        f"ASGD lr={DELTA} kappa={ACCSGD['kappa']:g} xi={ACCSGD['xi']:g} c={ACCSGD['small_const']}": (
            lambda p: ASGD(p, lr=DELTA, **ACCSGD)
        ),
    }
    ones, zeros = torch.ones(DIM, dtype=torch.float64), torch.zeros(DIM, dtype=torch.float64)
    curves = {}
    for name, make in methods.items():
        curves[name] = {
            "bias": _mean([risks(make, s, steps, ones, 0.0) for s in seeds]),
            "variance": _mean([risks(make, 1000 + s, steps, zeros, 1.0) for s in seeds]),
        }
    marks = checkpoints(steps)
    fig, axes = figure(3, width=4.6)
    panels = [("bias", "head"), ("bias", "tail"), ("variance", None)]
    for ax, (kind, part) in zip(axes, panels):
        for i, (name, c) in enumerate(curves.items()):
            label = name.split(" ")[0]
            if part is None:
                ax.loglog(marks, c[kind]["head"], color=f"C{i}", label=f"{label} head")
                ax.loglog(marks, c[kind]["tail"], "--", color=f"C{i}", label=f"{label} tail")
            else:
                ax.loglog(marks, c[kind][part], color=f"C{i}", label=label)
        title = f"{kind}, {part} subspace" if part else "variance (w0 = w*, sigma = 1)"
        ax.set(xlabel="samples", ylabel="excess risk", title=title)
        ax.legend(fontsize=8)
    lines = [
        f"least squares: d={DIM}, H=diag(i^-2), head = top {HEAD} eigenvalues; delta={DELTA}; "
        f"{len(list(seeds))} seeds; {steps} one-pass samples; AccSGD {ACCSGD} = four-parameter "
        + ", ".join(f"{k}={v:.4g}" for k, v in accsgd_to_four_parameter(DELTA, **ACCSGD).items()),
    ]
    sgd_name, asgd_name = list(curves)
    for t in (100, 1000, steps):
        i = max(j for j, m in enumerate(marks) if m <= t)
        row = []
        for kind, part in (("bias", "head"), ("bias", "tail"), ("variance", "head"), ("variance", "tail")):
            s, a = curves[sgd_name][kind][part][i], curves[asgd_name][kind][part][i]
            row.append(f"{kind} {part}: SGD {s:.2e} ASGD {a:.2e} (ASGD/SGD {a / s:.2f})")
        lines.append(f"t={marks[i]}: " + "; ".join(row))
    data = {"checkpoints": marks, "curves": curves, "dim": DIM, "head": HEAD, "delta": DELTA, "accsgd": ACCSGD}
    return StudyResult(data, fig, lines)


STUDY = Study("asgd", "accelerated SGD vs SGD: excess risk per eigen-subspace (bias and variance)", run)
