"""ALPD vs LPD and the baselines on min_x max_y f(x) + phi(x, y) - g(y) (Khalafi & Boob, ICML 2023, arXiv 2209.04604).

Claims checked: on the paper's §6.1 problem (smoothed l2 penalty) the duality gap of ALPD, ALPD-prox-g, LPD,
extragradient and GDA against iterations; ALPD's gradient complexity O(sqrt(L_f/eps)) against LPD's O(L_f/eps)
as the primal smoothness L_f grows (Theorems 3.2 and 4.4: fitted log-log slopes of iterations-to-eps against
L_f, theory 0.5 and 1); on §6.2 (quadratic constraints, general coupling) ALPD with Theorem 4.7's steps against
inexact ALPD (Algorithm 3), per gradient of f and per second.
"""

from __future__ import annotations

import time

import torch

from memopt.convex import alpd, extragradient, gradient_descent_ascent, inexact_alpd, loglog_slope, lpd
from memopt.harness.experiments.common import Options, Study, StudyResult, figure
from memopt.harness.problems.saddle import lq_penalty_problem, power_law_saddle, quadratic_constraint_problem


def _paper_61(steps: int, n: int) -> dict:
    p = lq_penalty_problem(n=n, m=n, L_f=200.0)
    o = p.oracles()
    x0, y0 = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    lip = o.L_f + o.L_xy + o.mu_g
    runs = {
        "ALPD": alpd(o, x0, y0, n_steps=steps, gap=p.gap),
        "ALPD-prox-g": alpd(o, x0, y0, n_steps=steps, prox_g=True, gap=p.gap),
        "LPD": lpd(o, x0, y0, n_steps=steps, gap=p.gap),
        "extragradient": extragradient(o, x0, y0, step=1 / lip, n_steps=steps, gap=p.gap),
        "GDA (averaged)": gradient_descent_ascent(o, x0, y0, step_x=1 / lip, step_y=1 / lip, n_steps=steps,
                                                  average=True, gap=p.gap),
    }
    return {"L_f": o.L_f, "L_xy": o.L_xy, "mu_g": o.mu_g, "n": n,
            "gaps": {k: r.history.values for k, r in runs.items()}}


def _scaling(values: list[float], n: int, eps: float, cap: int) -> dict:
    counts: dict[str, list[int | None]] = {"ALPD": [], "ALPD-prox-g": [], "LPD": []}
    for L_f in values:
        p = power_law_saddle(L_f, n=n, m=20)
        o = p.oracles()
        x0, y0 = torch.zeros(n, dtype=torch.float64), torch.zeros(20, dtype=torch.float64)
        for name, solver, kwargs in (("ALPD", alpd, {}), ("ALPD-prox-g", alpd, {"prox_g": True}),
                                     ("LPD", lpd, {})):
            r = solver(o, x0, y0, n_steps=cap, gap=p.gap, tol=eps, **kwargs)
            counts[name].append(r.history.oracle_calls[-1] if r.history.values[-1] <= eps else None)
    slopes = {}
    for name, ks in counts.items():
        pairs = [(v, k) for v, k in zip(values, ks) if k is not None]
        slopes[name] = loglog_slope([v for v, _ in pairs], [k for _, k in pairs]) if len(pairs) >= 2 else None
    ratios = [(lp / al if lp and al else None) for al, lp in zip(counts["ALPD"], counts["LPD"])]
    return {"L_f": values, "eps": eps, "n": n, "cap": cap, "gradients_to_eps": counts, "slopes": slopes,
            "theory": {"ALPD": 0.5, "LPD": 1.0}, "lpd_over_alpd": ratios}


def _paper_62(steps: int, n: int, m: int) -> dict:
    p = quadratic_constraint_problem(n=n, m=m, L_f=200.0, L_a=10.0)
    o = p.oracles()
    x0, y0 = torch.zeros(n, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    out = {}
    for name, run in (("ALPD (Thm 4.7)", lambda gap: alpd(o, x0, y0, n_steps=2 * steps, gap=gap)),
                      ("inexact ALPD", lambda gap: inexact_alpd(o, x0, y0, n_steps=steps, gap=gap))):
        start = time.perf_counter()
        r = run(None)
        seconds = time.perf_counter() - start
        gaps = run(p.gap).history.values  # same iterates; gaps evaluated outside the timed run
        out[name] = {"gaps": gaps, "grad_f": r.history.oracle_calls, "grad_x_phi": r.history.extra["grad_x_phi"],
                     "seconds": seconds}
    return {"n": n, "m": m, "L_f": o.L_f, "L_xx": o.L_xx, "L_xy": o.L_xy, "runs": out}


def run(options: Options) -> StudyResult:
    quick = options.quick
    p61 = _paper_61(40 if quick else 300, 50 if quick else 100)
    if quick:
        sc = _scaling([10.0, 30.0, 100.0, 300.0], n=100, eps=0.3, cap=20_000)
    else:
        sc = _scaling([1.0, 10.0, 100.0, 1000.0], n=200, eps=1e-2, cap=60_000)
    p62 = _paper_62(30 if quick else 100, 30 if quick else 100, 5 if quick else 10)
    fig, axes = figure(3, width=5.0)
    for name, gaps in p61["gaps"].items():
        axes[0].loglog(range(1, len(gaps)), gaps[1:], label=name)
    axes[0].set(xlabel="iteration", ylabel="duality gap",
                title=f"§6.1 l2 penalty, L_f={p61['L_f']:.0f}, L_xy={p61['L_xy']:.1f}")
    axes[0].legend(fontsize=7)
    for name, ks in sc["gradients_to_eps"].items():
        pts = [(v, k) for v, k in zip(sc["L_f"], ks) if k is not None]
        slope = sc["slopes"][name]
        label = f"{name} (slope {slope:.2f})" if slope is not None else name
        axes[1].loglog([v for v, _ in pts], [k for _, k in pts], "o-", label=label)
    axes[1].set(xlabel="L_f", ylabel=f"gradients of f to gap <= {sc['eps']}",
                title="gradient complexity vs L_f (theory 0.5 / 1)")
    axes[1].legend(fontsize=7)
    for name, row in p62["runs"].items():
        axes[2].semilogy(row["grad_f"], row["gaps"], label=f"{name} ({row['seconds']:.2f} s)")
    axes[2].set(xlabel="gradients of f", ylabel="duality gap",
                title=f"§6.2 quadratic constraints, L_xx={p62['L_xx']:.1f}")
    axes[2].legend(fontsize=7)
    lines = [f"§6.1 (n = m = {p61['n']}, L_f = {p61['L_f']:.0f}, L_xy = {p61['L_xy']:.1f}, mu_g = 1): gap after "
             f"{len(p61['gaps']['ALPD']) - 1} iterations:"]
    lines += [f"  {name}: {gaps[-1]:.4g}" for name, gaps in p61["gaps"].items()]
    lines.append(f"gradients of f to reach gap <= {sc['eps']} (power-law saddle, n = {sc['n']}, L_xy = 1, mu_g = 1):")
    for i, L_f in enumerate(sc["L_f"]):
        row = ", ".join(f"{name} {ks[i] if ks[i] is not None else '>' + str(sc['cap'])}"
                        for name, ks in sc["gradients_to_eps"].items())
        ratio = sc["lpd_over_alpd"][i]
        lines.append(f"  L_f = {L_f:g}: {row}; LPD/ALPD = {ratio:.2f}" if ratio else f"  L_f = {L_f:g}: {row}")
    lines.append("  fitted slope of gradients vs L_f: " + ", ".join(
        f"{k} {v:.3f}" for k, v in sc["slopes"].items() if v is not None) + " (theory ALPD 0.5, LPD 1)")
    for name, row in p62["runs"].items():
        lines.append(f"§6.2 {name}: gap {row['gaps'][-1]:.4g} after {row['grad_f'][-1]} gradients of f and "
                     f"{int(row['grad_x_phi'][-1])} of grad_x phi, {row['seconds']:.2f} s")
    return StudyResult({"paper_6_1": p61, "scaling": sc, "paper_6_2": p62}, fig, lines)


STUDY = Study("saddle", "saddle points: ALPD vs LPD (gradients vs L_f), baselines, inexact ALPD (arXiv 2209.04604)",
              run)
