"""PSGD-Kron against SGD and AdamW on the LM harness's tiny preset: does PSGD's advantage appear at this scale?

Every run is the training harness itself (``memopt.harness.train.loop.train``): LLaMA ``tiny`` preset (hidden
64, 2 layers, 4 heads; BPE vocabulary 1024), the Python language reference (``builtin:python-reference``),
sequences of 64 tokens, batch 16 (the preset's), cosine schedule with warmup, gradient clipping at 1, each
optimizer at the registry's recommended settings (``psgd_kron``: whitening preconditioner, no closure,
``lr=3e-3``, ``max_skew=10``), three seeds (model initialisation and data order). Recorded: the training loss
at every step, the validation loss every ``eval_every`` steps, the optimizer state bytes and the median step
time (a shared machine: upper bounds; compare within one run).

Xi-Lin Li, "Preconditioned Stochastic Gradient Descent", arXiv 1512.04202; Pooladzandi & Li,
"Curvature-Informed SGD via General Purpose Lie-Group Preconditioners", arXiv 2402.04553.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

from memopt.harness.experiments.common import Options, Study, StudyResult, figure
from memopt.harness.train.config import make_config
from memopt.harness.train.loop import train
from memopt.harness.train.metrics import METRICS_NAME, read_metrics
from memopt.registry.specs import recommended_hparams

NAMES = ("sgd", "adamw", "psgd_kron")
FULL = {"data": "builtin:python-reference", "max_steps": 300, "eval_every": 50, "eval_batches": 8}
#: a smoke run: small vocabulary and batches, a few steps
QUICK = {
    "data": "builtin:python-reference", "max_steps": 8, "eval_every": 4, "eval_batches": 1,
    "vocab_size": 512, "seq_len": 32, "batch_size": 4,
}  # fmt: skip


def run_one(name: str, seed: int, settings: dict, folder: str) -> dict:
    """One harness run; its training losses, validation losses, state bytes and times."""
    out = os.path.join(folder, f"{name}-{seed}")
    config = make_config("tiny", optimizer=name, seed=seed, out=out, quiet=True, **settings)
    start, cpu = time.perf_counter(), time.process_time()
    result = train(config)
    records = read_metrics(os.path.join(out, METRICS_NAME))
    return {
        "losses": [r["loss"] for r in records if r["event"] == "train"],
        "evals": [(e["step"], e["val_loss"]) for e in result.evals],
        "final_val_loss": result.final_val_loss,
        "state_bytes": result.state_bytes,
        "median_step_time": result.median_step_time,
        "wall_seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
    }


def run(options: Options) -> StudyResult:
    settings = dict(QUICK if options.quick else FULL)
    seeds = range(1 if options.quick else options.seeds)
    with tempfile.TemporaryDirectory() as folder:
        runs = {name: [run_one(name, seed, settings, folder) for seed in seeds] for name in NAMES}
    fig, (ax_train, ax_val) = figure(2, width=5.5)
    lines = [
        f"tiny LLaMA preset, {settings['max_steps']} steps, {len(seeds)} seed(s), recommended settings: "
        + "; ".join(f"{name} {recommended_hparams(name)}" for name in NAMES)
    ]
    summary = {}
    for name, rows in runs.items():
        losses = np.array([row["losses"] for row in rows])
        steps = np.arange(1, losses.shape[1] + 1)
        mean = losses.mean(0)
        (line,) = ax_train.plot(steps, mean, label=name)
        ax_train.fill_between(steps, losses.min(0), losses.max(0), color=line.get_color(), alpha=0.2)
        eval_steps = [step for step, _ in rows[0]["evals"]]
        vals = np.array([[loss for _, loss in row["evals"]] for row in rows])
        ax_val.errorbar(eval_steps, vals.mean(0), yerr=vals.std(0), label=name, capsize=3, marker="o", ms=3)
        finals = [row["final_val_loss"] for row in rows]
        summary[name] = {
            "final_val_loss_mean": statistics.mean(finals),
            "final_val_loss_std": statistics.pstdev(finals),
            "last20_train_loss_mean": float(losses[:, -20:].mean()),
            "state_bytes": rows[0]["state_bytes"],
            "median_step_time": statistics.median(row["median_step_time"] or 0.0 for row in rows),
            "cpu_seconds": sum(row["cpu_seconds"] for row in rows),
        }
        s = summary[name]
        lines.append(
            f"{name}: final validation loss {s['final_val_loss_mean']:.3f} +- {s['final_val_loss_std']:.3f} "
            f"(seeds {', '.join(f'{x:.3f}' for x in finals)}), training loss of the last 20 steps "
            f"{s['last20_train_loss_mean']:.3f}, state {s['state_bytes']} bytes, median step "
            f"{1000 * s['median_step_time']:.1f} ms, {s['cpu_seconds']:.1f} CPU-s for all seeds"
        )
    ax_train.set(xlabel="step", ylabel="training loss (mean, min-max over seeds)", title="tiny LLaMA: training")
    ax_val.set(xlabel="step", ylabel="validation loss (mean +- std)", title="tiny LLaMA: validation")
    for ax in (ax_train, ax_val):
        ax.legend(fontsize=8)
    return StudyResult({"settings": settings, "seeds": list(seeds), "summary": summary, "runs": runs}, fig, lines)


STUDY = Study("psgd", "PSGD-Kron against SGD and AdamW on the LM harness's tiny preset (3 seeds)", run)
