"""Wildfire calibration with PyTorchFire's differentiable cellular automaton (Xia & Cheng, arXiv 2502.18738).

Claim: the CA is differentiable, so its parameters (``a, p_h, c_1, c_2``) are calibrated to an observed fire
by gradient descent in real time, and the simulator runs in milliseconds on real-world-scale maps (on a GPU).

Setting: seeded synthetic landscapes (:mod:`memopt.harness.problems.wildfire`), a fire simulated with the
Spetses parameters of Alexandridis et al. (the "truth"), observed every step, without and with noise (random
cell flips). Calibration starts from PyTorchFire's defaults (``a = c_1 = c_2 = 0``, ``p_h = 0.3``).
Arms:

* each memopt registry optimizer of :data:`OPTIMIZERS` present in the registry (``psgd_kron`` joins when it
  is registered), its lr picked from :data:`LR_GRID` on the first landscape, minimizing the one-step
  transition negative log-likelihood (a few random transitions per step, projected onto PyTorchFire's box);
* the paper's own scheme: ``torch.optim.AdamW(lr=0.005)`` (PyTorchFire's ``BaseTrainer`` default) on its
  rollout loss (``BaseTrainer.criterion``: BCE-with-logits plus pooled MSE of the ring accumulator against
  the observed burn map, gradients attached at ``BaseTrainer.steps_to_attach``), growing the rollout length
  over the observation times, a new random stream each epoch, as its trainer does.

Reported: relative parameter error ``||theta - theta*|| / ||theta*||``, steps and wall time to reach
:data:`CALIBRATED` of it, the burned-area IoU against time of fires simulated with the calibrated parameters
(mean over random streams, against the true fire), and the simulator's step time against map size.
"""

from __future__ import annotations

import time

import torch

from memopt.harness.experiments.common import Options, Study, StudyResult, figure, mean_and_se
from memopt.harness.problems import wildfire as wf
from memopt.registry.specs import build_optimizer, list_optimizers, recommended_hparams

#: the memopt optimizers calibrated with, those in the registry are used (psgd_kron once registered)
OPTIMIZERS = ("adamw", "adagrad_norm", "nag_gs", "psgd_kron")
LR_GRID = (0.003, 0.01, 0.03, 0.1)
#: the start of every calibration: PyTorchFire's default parameters
INITIAL = {"a": 0.0, "p_h": 0.3, "c_1": 0.0, "c_2": 0.0}
#: a run counts as calibrated from the first step after which the relative parameter error stays below this
CALIBRATED = 0.15
PAPER = "paper: torch AdamW lr 0.005, rollout loss"


def optimizer_names() -> list[str]:
    """The names of :data:`OPTIMIZERS` that the registry has."""
    known = list_optimizers()
    return [name for name in OPTIMIZERS if name in known]


def _memopt_run(name: str, lr: float, env, frames, batch: int, steps: int, seed: int) -> wf.Calibration:
    model = wf.make_model(wf.strip_env(env, batch), INITIAL)
    optimizer = build_optimizer(model, name, **{**recommended_hparams(name), "lr": lr})
    return wf.calibrate(model, frames, optimizer, steps, seed=seed)


def paper_scheme(env, observed: torch.Tensor, iterations: int, interval: int, seed: int) -> wf.Calibration:
    """PyTorchFire's own calibration (its ``BaseTrainer``): AdamW lr 0.005 on its rollout criterion, the
    rollout length growing by ``interval`` steps per iteration up to the last observation (one epoch), a new
    random stream per epoch; parameters clamped to its box after every step."""
    trainer_cls = wf.pytorchfire().BaseTrainer
    model = wf.make_model(env, INITIAL)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.005)
    trainer = trainer_cls(model, optimizer=optimizer)
    burned = wf.burned_area(observed)
    horizons = list(range(interval, observed.shape[0], interval))
    history, seconds, elapsed = [wf.parameters_of(model)], [0.0], 0.0
    for it in range(iterations):
        start = time.perf_counter()
        horizon = horizons[it % len(horizons)]
        model.reset(seed=seed + it // len(horizons))
        for step in range(horizon):
            model.compute(attach=trainer.check_if_attach(step, horizon))
        loss = trainer.criterion(model.accumulator, burned[horizon])
        trainer.backward(loss)  # backward, AdamW step, zero_grad, clamp
        elapsed += time.perf_counter() - start
        history.append(wf.parameters_of(model))
        seconds.append(elapsed)
    return wf.Calibration(history, seconds)


def steps_to(errors: list[float], threshold: float) -> int | None:
    """The first step after which ``errors`` stay below ``threshold`` (None if the last is not below)."""
    if errors[-1] >= threshold:
        return None
    k = len(errors) - 1
    while k > 0 and errors[k - 1] < threshold:
        k -= 1
    return k


def iou_curve(env, params: dict[str, float], truth: torch.Tensor, streams: int, seed: int) -> list[float]:
    """Mean over ``streams`` random streams of the burned-area IoU with ``truth`` at every step."""
    steps = truth.shape[0] - 1
    model = wf.make_model(env, params)
    model.eval()
    true_area = wf.burned_area(truth)
    curves = []
    for s in range(streams):
        area = wf.burned_area(wf.simulate(model, steps, seed=seed + s))
        curves.append([wf.iou(area[t], true_area[t]) for t in range(steps + 1)])
    return [sum(c[t] for c in curves) / streams for t in range(steps + 1)]


def step_time_ms(size: int, steps: int, clock=time.perf_counter) -> float:
    """Milliseconds per ``WildfireModel.compute()`` (evaluation mode, no autograd) on a ``size``-cell square map
    with a fire that has spread ``steps`` steps; ``clock`` is wall time by default (``time.process_time``: this
    process's CPU time, the fairer number on a shared machine)."""
    model = wf.make_model(wf.synthetic_landscape(size, seed=0), wf.SPETSES)
    model.eval()
    model.reset(seed=0)
    with torch.no_grad():
        for _ in range(steps):
            model.compute()
        start = clock()
        for _ in range(steps):
            model.compute()
    return 1000 * (clock() - start) / steps


def run(options: Options) -> StudyResult:
    quick = options.quick
    size, horizon, batch = (24, 12, 4) if quick else (64, 30, 6)
    steps, paper_iters = (30, 6) if quick else (200, 60)
    grid = (0.03,) if quick else LR_GRID
    flip = 0.001
    seeds = list(range(options.seeds))
    names = optimizer_names()
    fires = {}
    for seed in seeds:
        env = wf.synthetic_landscape(size, seed=seed)
        clean = wf.simulate(wf.make_model(env, wf.SPETSES), horizon, seed=1000 + seed)
        fires[seed] = (env, clean, wf.observe(clean, flip, seed=2000 + seed))

    # lr per optimizer: the grid value with the smallest final error on the first landscape, noise-free
    env0, clean0, _ = fires[seeds[0]]
    chosen, grid_rows = {}, {}
    for name in names:
        finals = {}
        for lr in grid:
            run_ = _memopt_run(name, lr, env0, clean0, batch, steps, seed=0)
            finals[lr] = wf.relative_error(run_.params[-1], wf.SPETSES)
        grid_rows[name] = finals
        chosen[name] = min(finals, key=finals.get)

    runs = {}  # (arm, noise) -> seed -> calibration
    for noise, index in (("noise-free", 1), ("noisy", 2)):
        for seed in seeds:
            env, observed = fires[seed][0], fires[seed][index]
            for name in names:
                runs.setdefault((name, noise), {})[seed] = _memopt_run(
                    name, chosen[name], env, observed, batch, steps, seed=seed
                )
            runs.setdefault((PAPER, noise), {})[seed] = paper_scheme(env, observed, paper_iters, 3, seed=3000 + seed)

    rows, data_runs = [], {}
    for (arm, noise), by_seed in runs.items():
        errors = {s: [wf.relative_error(p, wf.SPETSES) for p in c.params] for s, c in by_seed.items()}
        reached = {s: steps_to(e, CALIBRATED) for s, e in errors.items()}
        rows.append(
            {
                "arm": arm,
                "noise": noise,
                "lr": chosen.get(arm, 0.005),
                "final_error": [e[-1] for e in errors.values()],
                "steps_to_calibrated": list(reached.values()),
                "seconds_to_calibrated": [
                    None if reached[s] is None else by_seed[s].seconds[reached[s]] for s in by_seed
                ],
                "seconds_per_step": [c.seconds[-1] / (len(c.seconds) - 1) for c in by_seed.values()],
                "final_params": [c.params[-1] for c in by_seed.values()],
            }
        )
        data_runs[f"{arm} | {noise}"] = {s: {"error": errors[s], "seconds": c.seconds} for s, c in by_seed.items()}

    # forecasts with the calibrated parameters (first landscape, noisy observations), against the true fire
    env0, clean0, _ = fires[seeds[0]]
    streams = 2 if quick else 5
    forecasts = {"true parameters": iou_curve(env0, wf.SPETSES, clean0, streams, 500)}
    forecasts["initial guess"] = iou_curve(env0, INITIAL, clean0, streams, 500)
    for row in rows:
        if row["noise"] == "noisy":
            forecasts[row["arm"]] = iou_curve(env0, row["final_params"][0], clean0, streams, 500)

    sizes = (24, 64) if quick else (64, 128, 256, 512)
    step_ms = {s: step_time_ms(s, 5 if quick else 20) for s in sizes}
    step_cpu_ms = {s: step_time_ms(s, 5 if quick else 20, clock=time.process_time) for s in sizes}

    lines = [
        f"{size}x{size} maps, fire observed for {horizon} steps (flip prob {flip} when noisy), landscapes {seeds}; "
        f"memopt arms: {steps} steps of {batch} transitions, lr from {list(grid)}; truth {wf.SPETSES}; "
        f"calibrated = relative parameter error < {CALIBRATED}"
    ]
    for name in names:
        lines.append(f"lr grid {name}: " + ", ".join(f"{lr:g}: {e:.3f}" for lr, e in grid_rows[name].items()))
    for row in rows:
        mean, se = mean_and_se(row["final_error"])
        reached = row["steps_to_calibrated"]
        secs = [s for s in row["seconds_to_calibrated"] if s is not None]
        text = f"steps to calibrated {reached}" + (f", {max(secs):.1f} s at most" if secs else "")
        lines.append(
            f"{row['arm']} ({row['noise']}, lr {row['lr']:g}): final error {mean:.3f} +- {se:.3f}; {text}; "
            f"{1000 * sum(row['seconds_per_step']) / len(row['seconds_per_step']):.0f} ms/step"
        )
    for arm, curve in forecasts.items():
        lines.append(f"IoU vs true fire at steps {horizon // 3}, {2 * horizon // 3}, {horizon}: {arm}: "
                     f"{curve[horizon // 3]:.3f}, {curve[2 * horizon // 3]:.3f}, {curve[horizon]:.3f}")
    lines.append("simulator step (CPU, 1 thread, no autograd), wall / CPU time: "
                 + ", ".join(f"{s}x{s}: {step_ms[s]:.1f} / {step_cpu_ms[s]:.1f} ms" for s in sizes))

    fig, (ax1, ax2, ax3) = figure(3)
    for i, arm in enumerate([*names, PAPER]):
        for noise, style in (("noise-free", "-"), ("noisy", "--")):
            err = data_runs[f"{arm} | {noise}"][seeds[0]]["error"]
            ax1.plot(range(len(err)), err, style, color=f"C{i}", label=f"{arm} ({noise})")
    ax1.axhline(CALIBRATED, ls=":", c="gray")
    ax1.set(yscale="log", xlabel="calibration step", ylabel="relative parameter error", title="calibration")
    ax1.legend(fontsize=6)
    for i, (arm, curve) in enumerate(forecasts.items()):
        ax2.plot(range(len(curve)), curve, label=arm, color="k" if i == 0 else f"C{i}")
    ax2.set(xlabel="simulation step", ylabel="burned-area IoU vs true fire", title="forecast with calibrated params")
    ax2.legend(fontsize=6)
    ax3.plot(list(step_ms), list(step_ms.values()), "o-")
    ax3.set(xscale="log", yscale="log", xlabel="map side (cells)", ylabel="ms per CA step", title="simulator, CPU")
    data = {
        "size": size,
        "horizon": horizon,
        "batch": batch,
        "steps": steps,
        "flip": flip,
        "truth": wf.SPETSES,
        "initial": INITIAL,
        "lr_grid": grid_rows,
        "chosen_lr": chosen,
        "rows": rows,
        "runs": data_runs,
        "forecast_iou": forecasts,
        "step_ms": step_ms,
        "step_cpu_ms": step_cpu_ms,
    }
    return StudyResult(data, fig, lines)


STUDY = Study(
    "wildfire",
    "PyTorchFire: calibrating a differentiable wildfire CA to an observed fire with memopt optimizers",
    run,
)
