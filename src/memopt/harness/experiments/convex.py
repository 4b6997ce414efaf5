"""Convex solvers against their rates (Bubeck 2015): measured convergence on log-log axes with fitted slopes.

Claims checked: GD ``1/t`` and AGD ``1/t^2`` on a smooth convex problem (Theorems 3.3, 3.19), the linear rates
of GD (Theorems 3.10, 3.12) and AGD (Theorem 3.18) on a strongly convex quadratic against their predicted
contraction, mirror descent / subgradient descent ``1/sqrt(t)`` (Theorems 4.2, 3.2), Frank-Wolfe ``1/t``
(Theorem 3.8), SGD ``1/t`` (Theorem 6.2), SVRG's per-epoch factor (Theorem 6.5), and FISTA against
scikit-learn's Lasso.
"""

from __future__ import annotations

import math

import torch

from memopt.convex import (
    EntropySimplex,
    contraction,
    fista,
    frank_wolfe,
    gradient_descent,
    loglog_slope,
    mirror_descent,
    nesterov_agd,
    nesterov_agd_strongly_convex,
    project_ball,
    prox_l1,
    rate_exponent_ratio,
    sgd,
    simplex_lmo,
    strongly_convex_steps,
    subgradient_descent,
    svrg,
)
from memopt.harness.experiments.common import Options, Study, StudyResult, figure
from memopt.harness.problems.convex import (
    ill_conditioned_quadratic,
    l1_regression,
    lasso,
    logistic,
    power_law_quadratic,
    simplex_center_quadratic,
    simplex_least_squares,
)


def _sublinear(steps: int) -> dict:
    a = 0.05
    p = power_law_quadratic(exponent=a)
    x0 = torch.zeros_like(p.minimizer)
    gd = gradient_descent(p.grad, x0, step=1 / p.beta, n_steps=steps, monitor=p.value).history.gaps(p.f_star)
    agd = nesterov_agd(p.grad, x0, beta=p.beta, n_steps=steps, monitor=p.value).history.gaps(p.f_star)
    t = list(range(steps + 1))
    return {
        "exponent": a,
        "window": [10, steps],
        "gd": gd,
        "agd": agd,
        "gd_slope": loglog_slope(t, gd, 10, steps),
        "agd_slope": loglog_slope(t, agd, 10, steps),
        "gd_theory": -1.0,
        "agd_theory": -2.0,
        "gd_exact_for_this_spectrum": -(1 + a),
        "agd_exact_for_this_spectrum": -2 * (1 + a),
    }


def _linear() -> dict:
    p = ill_conditioned_quadratic(dim=50, alpha=0.01, beta=1.0)
    kappa = p.beta / p.alpha
    x0 = torch.zeros(50, dtype=torch.float64)
    runs = {
        "GD eta=2/(alpha+beta)": (gradient_descent(p.grad, x0, step=2 / (p.alpha + p.beta), n_steps=600,
                                                   keep_iterates=True), (kappa - 1) / (kappa + 1)),
        "GD eta=1/beta": (gradient_descent(p.grad, x0, step=1 / p.beta, n_steps=2000, keep_iterates=True),
                          1 - 1 / kappa),
        "AGD strongly convex": (nesterov_agd_strongly_convex(p.grad, x0, alpha=p.alpha, beta=p.beta, n_steps=300,
                                                             keep_iterates=True), 1 - 1 / math.sqrt(kappa)),
    }
    rows = {}
    for name, (r, predicted) in runs.items():
        errors = [float((x - p.minimizer).norm()) for x in r.history.iterates]
        n = len(errors) - 1
        rho = contraction(errors, n // 2, n)
        rows[name] = {"errors": errors, "measured": rho, "predicted": predicted,
                      "exponent_ratio": rate_exponent_ratio(rho, predicted)}
    return {"kappa": kappa, "runs": rows}


def _nonsmooth(horizons: list[int]) -> dict:
    p = l1_regression(n=60, dim=20, seed=0, on_simplex=True)
    mirror = EntropySimplex(20)
    R, L = math.sqrt(mirror.radius_squared()), p.lipschitz_inf
    md = [mirror_descent(p.l1_subgrad, mirror, step=R / L * math.sqrt(2 / t), n_steps=t, monitor=p.l1_value)
          .history.values[-1] for t in horizons]
    q = l1_regression(n=60, dim=20, seed=1)
    radius = 1.5 * float(q.minimizer.norm())
    L2 = q.lipschitz_2
    sub = [subgradient_descent(q.l1_subgrad, torch.zeros(20, dtype=torch.float64), step=radius / (L2 * math.sqrt(t)),
                               n_steps=t, project=project_ball(radius), monitor=q.l1_value).history.values[-1]
           for t in horizons]
    return {
        "horizons": horizons,
        "mirror_descent": md,
        "mirror_descent_bound": [R * L * math.sqrt(2 / t) for t in horizons],
        "subgradient": sub,
        "subgradient_bound": [radius * L2 / math.sqrt(t) for t in horizons],
        "mirror_descent_slope": loglog_slope(horizons, md),
        "subgradient_slope": loglog_slope(horizons, sub),
        "theory": -0.5,
    }


def _frank_wolfe(steps: int) -> dict:
    hard = simplex_center_quadratic(10_000)
    x0 = torch.zeros(10_000, dtype=torch.float64)
    x0[0] = 1.0
    v_hard = frank_wolfe(hard.grad, simplex_lmo, x0, n_steps=steps, monitor=hard.value).history.values
    p = simplex_least_squares()
    y0 = torch.zeros(30, dtype=torch.float64)
    y0[0] = 1.0
    v_face = frank_wolfe(p.grad, simplex_lmo, y0, n_steps=steps, monitor=p.value).history.values
    t = list(range(steps + 1))
    return {
        "hard": v_hard,
        "face": v_face,
        "hard_slope": loglog_slope(t, v_hard, 10, steps),
        "face_slope": loglog_slope(t, v_face, 10, steps),
        "theory": -1.0,
    }


def _stochastic(steps: int, seeds: int) -> dict:
    p = logistic(n=200, dim=10, reg=0.1, seed=0)
    n = p.A.shape[0]

    def grad_i(w, i):
        a, y = p.A[i], p.y[i]
        return -y * a * torch.sigmoid(-y * (a @ w)) + p.reg * w

    def stoch(w, generator):
        return grad_i(w, int(torch.randint(n, (1,), generator=generator)))

    gaps = []
    for seed in range(seeds):
        r = sgd(stoch, torch.zeros(10, dtype=torch.float64), step=strongly_convex_steps(p.alpha), n_steps=steps,
                average="linear", seed=seed, monitor=p.value)
        gaps.append([v - p.f_star for v in r.history.values])
    mean = [sum(g[t] for g in gaps) / seeds for t in range(steps + 1)]
    beta_i = float((p.A.norm(dim=1) ** 2).max()) / 4 + p.reg
    k = math.ceil(20 * beta_i / p.alpha)
    factors = []
    for seed in range(seeds):
        r = svrg(grad_i, n, torch.zeros(10, dtype=torch.float64), step=1 / (10 * beta_i), epoch_length=k,
                 n_epochs=3, seed=seed, monitor=p.value)
        g = [v - p.f_star for v in r.history.values]
        factors.append((g[-1] / g[0]) ** (1 / 3))
    return {"sgd_mean_gap": mean, "sgd_slope": loglog_slope(range(steps + 1), mean, steps // 20, steps),
            "sgd_theory": -1.0, "svrg_epoch_factor": sum(factors) / seeds, "svrg_theorem_bound": 0.9,
            "svrg_epoch_length": k}


def _lasso() -> dict:
    p = lasso(n=100, dim=40, lam=0.05, seed=0)
    reference = p.sklearn_solution()
    r = fista(p.grad, prox_l1(p.lam), torch.zeros(40, dtype=torch.float64), beta=p.beta, n_steps=500)
    return {"max_abs_difference": float((r.x - reference).abs().max()), "support": int((reference != 0).sum()),
            "same_support": bool(torch.equal(r.x == 0, reference == 0))}


def run(options: Options) -> StudyResult:
    quick = options.quick
    sub = _sublinear(300 if quick else 2000)
    lin = _linear()
    horizons = [50, 100, 200, 400] if quick else [100, 200, 400, 800, 1600, 3200, 6400]
    ns = _nonsmooth(horizons)
    fw = _frank_wolfe(200 if quick else 2000)
    st = _stochastic(300 if quick else 2000, 2 if quick else max(options.seeds, 3))
    la = _lasso()
    fig, axes = figure(4, width=4.6)
    t = range(len(sub["gd"]))
    axes[0].loglog(t[1:], sub["gd"][1:], label=f"GD (slope {sub['gd_slope']:.2f}, theory -1)")
    axes[0].loglog(t[1:], sub["agd"][1:], label=f"AGD (slope {sub['agd_slope']:.2f}, theory -2)")
    axes[0].set(xlabel="iteration t", ylabel="f - f*", title="smooth convex (power-law quadratic)")
    axes[0].legend(fontsize=7)
    for name, row in lin["runs"].items():
        axes[1].semilogy(row["errors"], label=f"{name}: {row['measured']:.4f} vs {row['predicted']:.4f}")
    axes[1].set(xlabel="iteration t", ylabel="||x_t - x*||", title=f"strongly convex, kappa={lin['kappa']:.0f}")
    axes[1].legend(fontsize=7)
    axes[2].loglog(ns["horizons"], ns["mirror_descent"], "o-",
                   label=f"entropic MD (slope {ns['mirror_descent_slope']:.2f})")
    axes[2].loglog(ns["horizons"], ns["mirror_descent_bound"], ":", label="Thm 4.2 bound")
    axes[2].loglog(ns["horizons"], ns["subgradient"], "s-", label=f"subgradient (slope {ns['subgradient_slope']:.2f})")
    axes[2].loglog(ns["horizons"], ns["subgradient_bound"], ":", label="Thm 3.2 bound")
    axes[2].set(xlabel="horizon t", ylabel="f(avg) - f*", title="non-smooth, theory slope -1/2")
    axes[2].legend(fontsize=7)
    tf = range(len(fw["hard"]))
    axes[3].loglog(tf[1:], fw["hard"][1:], label=f"FW, hard instance (slope {fw['hard_slope']:.2f})")
    axes[3].loglog(tf[1:], fw["face"][1:], label=f"FW, optimum in a face (slope {fw['face_slope']:.2f})")
    axes[3].set(xlabel="iteration t", ylabel="f - f*", title="Frank-Wolfe, theory slope -1")
    axes[3].legend(fontsize=7)
    lines = [
        f"GD on the power-law quadratic: slope {sub['gd_slope']:.3f} (theory -1; this spectrum "
        f"{sub['gd_exact_for_this_spectrum']:.2f}), window t = {sub['window']}",
        f"AGD: slope {sub['agd_slope']:.3f} (theory -2; this spectrum {sub['agd_exact_for_this_spectrum']:.2f})",
    ]
    for name, row in lin["runs"].items():
        lines.append(f"{name}: contraction {row['measured']:.5f} vs predicted {row['predicted']:.5f} "
                     f"({100 * (row['measured'] / row['predicted'] - 1):+.2f}%; rate exponent ratio "
                     f"{row['exponent_ratio']:.3f})")
    lines += [
        f"entropic mirror descent: slope {ns['mirror_descent_slope']:.3f} over horizons {horizons} (theory -0.5), "
        f"final gap {ns['mirror_descent'][-1]:.2e} <= bound {ns['mirror_descent_bound'][-1]:.2e}",
        f"projected subgradient: slope {ns['subgradient_slope']:.3f} (theory -0.5), final gap "
        f"{ns['subgradient'][-1]:.2e} <= bound {ns['subgradient_bound'][-1]:.2e}",
        f"Frank-Wolfe: slope {fw['hard_slope']:.3f} on the hard instance (theory -1); {fw['face_slope']:.3f} when the "
        "optimum lies in a face of a strongly convex problem (faster than the worst case)",
        f"SGD, strongly convex, step 2/(alpha(s+1)), weighted average: slope {st['sgd_slope']:.3f} (theory -1)",
        f"SVRG (eta = 1/(10 beta), k = 20 kappa = {st['svrg_epoch_length']}): per-epoch factor "
        f"{st['svrg_epoch_factor']:.3f} (Theorem 6.5 bound 0.9)",
        f"lasso: FISTA vs scikit-learn Lasso: max |difference| {la['max_abs_difference']:.1e}, same support "
        f"({la['support']} nonzeros): {la['same_support']}",
    ]
    data = {"sublinear": sub, "linear": lin, "nonsmooth": ns, "frank_wolfe": fw, "stochastic": st, "lasso": la}
    return StudyResult(data, fig, lines)


STUDY = Study("convex", "convex solvers: fitted rates (GD, AGD, linear rates, MD, FW, SGD, SVRG) against theory", run)
