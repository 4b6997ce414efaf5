"""``memopt compare``: the same model and data trained with several optimizers, fairly, over several seeds.

A comparison has three parts:

1. *Tuning* (``--tune lr,plain_lr``, optional): per optimizer, a sweep of each listed hyperparameter over a
   grid (:mod:`memopt.harness.bench.tuning`), one run per value with the same token budget for every
   optimizer; the value with the lowest final validation loss is kept. Without ``--tune`` the learning rates
   are those recorded for the preset by such a sweep (:mod:`memopt.harness.bench.compare_recipe`), else
   the registry's.
2. *Runs*: every optimizer with every seed (``--seeds N``: seeds ``seed``, ``seed + 1``, ...; the seed fixes
   the model's initialisation and the order of the data, the same for every optimizer).
3. *Summary*: per optimizer the mean and spread over seeds of the final and best validation loss, the tokens
   needed to reach the baseline's final (and best) validation loss, the passes over the training data, the
   step time (with a note when the machine was busy), and a verdict of Welch's t-test against the baseline
   (:mod:`memopt.harness.bench.statistics`). Written as a table, ``summary.json`` and ``compare.png``
   (curves with bands over seeds, state memory) and, after a sweep, ``sweep.png``.

Tokens-to-target, per seed: the first point where the optimizer's validation curve reaches the final
validation loss of the baseline's run with the same seed, linearly interpolated between the two evaluations
around the crossing ("best" target: that run's lowest validation loss). The baseline's own figure is
computed the same way, so its fraction is 1.0 unless its curve dipped below its final loss earlier.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from memopt.harness.bench import compare_recipe as recipe
from memopt.harness.bench.machine import LoadProbe, machine_info
from memopt.harness.bench.progress import CompareProgress
from memopt.harness.bench.statistics import Spread, format_spread, spread, welch_verdict
from memopt.harness.bench.tuning import (
    DEFAULT_POINTS,
    DEFAULT_SPAN,
    GridSpec,
    Sweep,
    choose,
    default_grid,
    parse_grid,
    parse_tune,
)
from memopt.harness.train import optimizers as opt_lib
from memopt.harness.train.checkpoint import atomic_write_bytes
from memopt.harness.train.config import TrainConfig
from memopt.harness.train.data import PreparedData, check_sizes, prepare_data
from memopt.harness.train.errors import ConfigError, NonFiniteLossError
from memopt.harness.train.loop import Trainer, TrainResult, perplexity
from memopt.harness.train.metrics import json_safe
from memopt.harness.train.progress import Progress
from memopt.harness.train.run_folder import check_out

DEFAULT_OPTIMIZERS = recipe.DEFAULT_OPTIMIZERS
SUMMARY_NAME = "summary.json"
PLOT_NAME = "compare.png"
SWEEP_PLOT_NAME = "sweep.png"
FRONTIER_PLOT_NAME = "frontier.png"
MIB = 2**20


@dataclass(frozen=True)
class Entry:
    """One row of the comparison: a label, the registry optimizer behind it, and its hyperparameters
    (over the registry's recommended ones), with where each came from."""

    label: str
    optimizer: str
    hparams: dict[str, Any]
    sources: dict[str, str]


@dataclass
class CompareConfig:
    """A comparison of optimizers.

    Attributes:
        optimizers: row labels, in table order: registry names, ``LABEL=NAME`` (the registry optimizer
            NAME under another label, e.g. to compare two settings of one optimizer), or a built-in
            variant (:data:`memopt.harness.bench.compare_recipe.VARIANTS`, e.g. ``adamw_groups``).
        base: settings shared by every run (its ``optimizer``, ``hparams`` and ``out`` are replaced; its
            ``lr``, if set, applies to every optimizer).
        hparams: per-label overrides, ``{label: {key: value}}``; key None applies to all.
        baseline: the row the others are measured against (default: ``adamw`` if compared, else the first).
        out: the run folder.
        seeds: runs per optimizer, with seeds ``base.seed``, ``base.seed + 1``, ...
        tune: hyperparameters to sweep before the comparison, in order (e.g. ``["lr", "plain_lr"]``); an item
            ``LABEL:KEY`` is swept for that row alone (``adamw_groups:plain_lr``).
        grids: ``--grid`` items; the most specific (scoped to the label) wins.
        grid_points, grid_span: the default grids (:func:`memopt.harness.bench.tuning.default_grid`).
        tune_tokens: the token budget of each sweep run (None: the comparison's own budget).
        tune_seeds: seeds per sweep value (their final losses are averaged).
        use_tuned: apply the preset's recorded learning rates (:data:`compare_recipe.TUNED`).
        frontier: also plot final validation loss against state bytes with the Pareto front
            (``frontier.png``, :mod:`memopt.harness.bench.frontier`; its labels in the summary's ``frontier``).
    """

    optimizers: list[str] = field(default_factory=lambda: list(DEFAULT_OPTIMIZERS))
    base: TrainConfig = field(default_factory=TrainConfig)
    hparams: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    baseline: str | None = None
    out: str = "runs/compare"
    seeds: int = 1
    tune: list[str] = field(default_factory=list)
    grids: list[GridSpec] = field(default_factory=list)
    grid_points: int = DEFAULT_POINTS
    grid_span: float = DEFAULT_SPAN
    tune_tokens: int | None = None
    tune_seeds: int = 1
    use_tuned: bool = True
    frontier: bool = False

    def tune_keys(self, label: str) -> list[str]:
        """The hyperparameters swept for the row ``label``, in order."""
        keys = []
        for item in self.tune:
            scope, _, key = item.rpartition(":")
            if not scope or scope == label:
                keys.append(key)
        return keys

    def labels(self) -> list[str]:
        """The row labels (``LABEL=NAME`` items give LABEL)."""
        return [item.partition("=")[0].strip() for item in self.optimizers]

    def baseline_name(self) -> str:
        """The baseline row's label."""
        if self.baseline is not None:
            return self.baseline
        labels = self.labels()
        return "adamw" if "adamw" in labels else labels[0]

    def entries(self) -> list[Entry]:
        """Every row with its registry optimizer and hyperparameters: the variant's, then the preset's
        recorded sweep, then ``--opt`` for all, then ``--opt LABEL:``, then ``--lr``."""
        registry = opt_lib.optimizer_names()
        preset = None if self.base.model_config else self.base.preset
        entries = []
        for item in self.optimizers:
            label, sep, name = (part.strip() for part in item.partition("="))
            layers: list[tuple[str, dict[str, Any]]] = []
            if not sep:
                name = label
                if label not in registry and label in recipe.VARIANTS:
                    name, variant = recipe.VARIANTS[label]
                    layers.append((f"variant {label}", variant))
            if self.use_tuned and recipe.tuned_hparams(preset, label):
                layers.append((f"sweep for preset {preset} (docs/results.md)", recipe.tuned_hparams(preset, label)))
            layers.append(("--opt", self.hparams.get(None, {})))
            layers.append((f"--opt {label}:", self.hparams.get(label, {})))
            if self.base.lr is not None:
                layers.append(("--lr", {"lr": self.base.lr}))
            hparams: dict[str, Any] = {}
            sources: dict[str, str] = {}
            for source, values in layers:
                hparams.update(values)
                sources.update(dict.fromkeys(values, source))
            entries.append(Entry(label, name, hparams, sources))
        return entries

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the flag for bad optimizers, baseline, seeds or tuning settings."""
        if not self.optimizers:
            raise ConfigError("--optimizers: give at least one optimizer name, e.g. --optimizers adamw,adamw_sn.")
        registry = opt_lib.optimizer_names()
        for item in self.optimizers:
            label, sep, name = (part.strip() for part in item.partition("="))
            if sep and not (label and name):
                raise ConfigError(f"--optimizers {item!r}: write LABEL=NAME, e.g. adamw_wd=adamw.")
            if not sep and label not in registry and label in recipe.VARIANTS:
                continue
            opt_lib.check_name(name if sep else label)
        labels = self.labels()
        duplicates = sorted({n for n in labels if labels.count(n) > 1})
        if duplicates:
            raise ConfigError(f"--optimizers: {', '.join(duplicates)} listed twice; list each optimizer once.")
        if self.baseline_name() not in labels:
            raise ConfigError(
                f"--baseline {self.baseline_name()}: not among --optimizers {','.join(labels)}; "
                "add it or pick one of them."
            )
        scopes = [s for s in self.hparams if s is not None] + [g.scope for g in self.grids if g.scope is not None]
        scopes += [item.rpartition(":")[0] for item in self.tune if ":" in item]
        unknown = [s for s in scopes if s not in labels]
        if unknown:
            raise ConfigError(f"{unknown[0]}:...: {unknown[0]!r} is not among --optimizers {','.join(labels)}.")
        if self.seeds < 1:
            raise ConfigError(f"--seeds {self.seeds}: must be at least 1 (3 or more give a verdict with a spread).")
        if self.tune_seeds < 1:
            raise ConfigError(f"--tune-seeds {self.tune_seeds}: must be at least 1.")
        if self.tune_tokens is not None and self.tune_tokens < self.base.tokens_per_step:
            raise ConfigError(
                f"--tune-tokens {self.tune_tokens}: less than one step of {self.base.tokens_per_step:,} tokens."
            )
        untuned = sorted({g.key for g in self.grids} - {item.rpartition(":")[2] for item in self.tune})
        if untuned:
            raise ConfigError(f"--grid {untuned[0]}=...: {untuned[0]} is not tuned; add it to --tune.")


def tokens_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """Tokens at which ``curve`` (``(tokens, val_loss)`` pairs) first reaches ``target``, interpolated.

    Returns None if the curve never reaches it.
    """
    previous: tuple[int, float] | None = None
    for tokens, loss in curve:
        if loss <= target:
            if previous is None or previous[1] == loss:
                return float(tokens)
            t0, l0 = previous
            return t0 + (l0 - target) / (l0 - loss) * (tokens - t0)
        previous = (tokens, loss)
    return None


# ------------------------------------------------------------------------------------------ running


class _Runner:
    """Trains the runs of one comparison, reporting progress; knows the data and the run folder."""

    def __init__(self, config: CompareConfig, data: PreparedData, progress: CompareProgress, hidden: int | None):
        self.config = config
        self.data = data
        self.progress = progress
        self.hidden = hidden

    def run_config(
        self, entry: Entry, hparams: dict[str, Any], seed: int, out: Path, tokens: int | None
    ) -> TrainConfig:
        """The settings of one run (``tokens``: a sweep run's budget; None: the comparison's)."""
        changes: dict[str, Any] = {"optimizer": entry.optimizer, "hparams": hparams, "lr": None, "seed": seed}
        # the runs keep no checkpoint: a run folder left by a killed comparison (no summary.json yet) is started again
        changes.update(out=str(out), quiet=True, save_checkpoints=False, restart=True)
        if tokens is not None:  # a sweep run: its own budget and schedule, evaluated at the end only
            changes.update(max_steps=None, max_tokens=tokens, schedule_steps=None, max_time=None, eval_every=0)
        return dataclasses.replace(self.config.base, **changes)

    def train(self, settings: TrainConfig, label: str) -> TrainResult:
        """Train one run; its result, with the machine's load while it ran in ``extra["load"]``."""
        probe = LoadProbe()
        probe.start()
        self.progress.start_run(label, settings.total_steps())
        try:
            result = Trainer(settings, self.data, progress=self._report).run()
        finally:
            self.progress.end_run()
        result.extra["load"] = probe.stop()
        return result

    def _report(self, progress: Progress) -> None:
        """The Trainer's progress hook: each step moves the overall progress line."""
        if progress.event == "train":
            self.progress.update(progress.step, progress.tokens)

    def sweep_loss(self, entry: Entry, hparams: dict[str, Any], key: str, value: Any) -> float:
        """Mean final validation loss of a sweep point over the tuning seeds (``inf`` if a run diverged)."""
        config = self.config
        tokens = config.tune_tokens or config.base.total_steps() * config.base.tokens_per_step
        losses = []
        for i in range(config.tune_seeds):
            seed = config.base.seed + i
            out = Path(config.out) / "tune" / entry.label / f"{key}={_slug(value)}" / f"seed-{seed}"
            settings = self.run_config(entry, {**hparams, key: value}, seed, out, tokens)
            try:
                result = self.train(settings, f"tune {entry.label} {key}={value!r} seed {seed}")
            except NonFiniteLossError:
                return math.inf
            loss = result.final_val_loss
            losses.append(math.inf if loss is None or not math.isfinite(loss) else loss)
        return sum(losses) / len(losses)

    def tune(self, entry: Entry) -> tuple[dict[str, Any], list[Sweep]]:
        """Sweep the row's ``config.tune`` keys one after the other; its hyperparameters at the chosen values."""
        hparams = dict(entry.hparams)
        sweeps = []
        keys = self.config.tune_keys(entry.label)
        for key in keys:
            values = self.grid(entry, hparams, key)
            losses = [self.sweep_loss(entry, hparams, key, v) for v in values]
            fixed = {k: hparams[k] for k in keys[: keys.index(key)] if k in hparams}
            found = Sweep(entry.label, key, values, losses, choose(losses), fixed)
            sweeps.append(found)
            hparams[key] = found.value
            self.progress.log(
                f"  tuned {entry.label}: {key}={found.value!r} (val loss {losses[found.chosen]:.4f})"
                + (f"; warning: {found.warning}" if found.warning else "")
            )
        return hparams, sweeps

    def grid(self, entry: Entry, hparams: dict[str, Any], key: str) -> list[Any]:
        """The values of ``key`` to sweep for ``entry``."""
        scoped = [g for g in self.config.grids if g.key == key and g.scope == entry.label]
        general = [g for g in self.config.grids if g.key == key and g.scope is None]
        if scoped or general:
            return list((scoped or general)[-1].values)
        resolved = opt_lib.resolve_hparams(entry.optimizer, hparams, None, self.hidden)
        center = resolved.get(key, resolved.get("lr") if key == opt_lib.PLAIN_LR else None)
        if key not in opt_lib.accepted_hparams(entry.optimizer):
            raise ConfigError(f"--tune {key}: {entry.label} ({entry.optimizer}) has no hyperparameter {key!r}.")
        return default_grid(key, center, self.config.grid_points, self.config.grid_span)

    def grid_size(self, entry: Entry, key: str) -> int:
        """How many values ``key`` will be swept over (known before the sweep's center is)."""
        explicit = [g for g in self.config.grids if g.key == key and g.scope in (None, entry.label)]
        if explicit:
            scoped = [g for g in explicit if g.scope == entry.label]
            return len((scoped or explicit)[-1].values)
        return len(default_grid(key, 1.0, self.config.grid_points, self.config.grid_span))


def _slug(value: Any) -> str:
    """A folder-name form of a hyperparameter value."""
    text = repr(value)
    return "".join(c if c.isalnum() or c in ".-+e" else "_" for c in text)


def run_compare(
    config: CompareConfig, log=print, command: str | None = None, progress_stream: TextIO | None = None
) -> dict[str, Any]:
    """Tune (if asked), train every optimizer with every seed, and write and return the summary.

    Args:
        config: the comparison.
        log: where result lines go (``print`` by default; a no-op to silence).
        command: the command line that started the comparison, recorded in the summary.
        progress_stream: where the overall progress line goes (default: standard error).

    Raises:
        HarnessError: bad input (data, preset, optimizer, hyperparameters, an occupied ``out`` folder).
    """
    config.validate()
    out = check_out(config.out)
    if (out / SUMMARY_NAME).exists():
        raise ConfigError(f"--out {out}: the folder already holds a comparison ({SUMMARY_NAME}); choose another --out.")
    started = time.time()
    data = prepare_data(config.base.data_config())
    check_sizes(data, config.base.seq_len, config.base.batch_size)
    entries = config.entries()
    probe_config = dataclasses.replace(config.base, optimizer=entries[0].optimizer, hparams=entries[0].hparams,
                                       lr=None, out=str(out / "probe"))  # fmt: skip
    probe = Trainer(probe_config, data)
    hidden = getattr(probe.model_config, "hidden_size", None)
    for entry in entries:  # a bad hyperparameter fails now, before any training
        opt_lib.build(
            probe.model, entry.optimizer, opt_lib.resolve_hparams(entry.optimizer, entry.hparams, None, hidden)
        )
    device, num_params, steps = str(probe.device), probe.num_params, probe.total_steps
    del probe

    budget = steps * config.base.tokens_per_step
    tune_budget = config.tune_tokens or budget
    tune_steps = math.ceil(tune_budget / config.base.tokens_per_step)
    progress_stream = sys.stderr if progress_stream is None else progress_stream
    runner = _Runner(config, data, CompareProgress(0, 0, stream=progress_stream), hidden)
    sweep_runs = sum(runner.grid_size(e, k) for e in entries for k in config.tune_keys(e.label)) * config.tune_seeds
    total_runs = sweep_runs + len(entries) * config.seeds
    runner.progress = CompareProgress(total_runs, sweep_runs * tune_steps * config.base.tokens_per_step
                                      + len(entries) * config.seeds * budget, stream=progress_stream)  # fmt: skip
    train_tokens = _block_tokens(data, config.base.seq_len)
    log(
        f"memopt compare: {', '.join(config.labels())} on {data.meta['corpus']} "
        f"({data.meta['train_tokens']:,} training tokens, vocabulary {data.vocab_size}); model "
        f"{config.base.model_config or config.base.preset} ({num_params:,} parameters); "
        f"{steps} steps x {config.base.tokens_per_step:,} tokens = {budget / train_tokens:.2f} passes; "
        f"{config.seeds} seed(s); "
        + (f"tuning {','.join(config.tune)} first; " if config.tune else "")
        + f"{total_runs} runs; device {device}"
    )

    sweeps: list[Sweep] = []
    chosen: dict[str, Entry] = {}
    for entry in entries:
        if config.tune_keys(entry.label):
            hparams, found = runner.tune(entry)
            sweeps.extend(found)
            sources = {**entry.sources, **dict.fromkeys(config.tune_keys(entry.label), "--tune (this run)")}
            entry = dataclasses.replace(entry, hparams=hparams, sources=sources)
        chosen[entry.label] = entry
    results: dict[str, list[TrainResult]] = {}
    for entry in chosen.values():
        began = time.time()
        results[entry.label] = []
        for i in range(config.seeds):
            seed = config.base.seed + i
            settings = runner.run_config(entry, entry.hparams, seed, out / entry.label / f"seed-{seed}", None)
            results[entry.label].append(runner.train(settings, f"{entry.label} seed {seed}"))
        finals = spread([r.final_val_loss for r in results[entry.label] if r.final_val_loss is not None])
        runner.progress.log(
            f"  {entry.label}: val loss {format_spread(finals, '.4f')} after {results[entry.label][0].tokens:,} "
            f"tokens x {config.seeds} seed(s) ({time.time() - began:.0f} s)",
            log,
        )
    runner.progress.close()

    extra = {
        "command": command,
        "config": dataclasses.asdict(config.base) | {"optimizer": None, "hparams": None, "out": None},
        "model": config.base.model_config or config.base.preset,
        "num_params": num_params,
        "data": data.meta,
        "train_block_tokens": train_tokens,
        "tokens_per_step": config.base.tokens_per_step,
        "seeds": [config.base.seed + i for i in range(config.seeds)],
        "tuning": {
            "keys": config.tune,
            "tokens_per_run": tune_budget if config.tune else None,
            "seeds": config.tune_seeds if config.tune else None,
            "sweeps": [s.to_json() for s in sweeps],
        },
        "machine": machine_info(device),
        "wall_time_s": time.time() - started,
    }
    summary = summarize(config, chosen, results, extra)
    summary["table"] = format_table(summary)
    if config.frontier:
        from memopt.harness.bench.frontier import plot_frontier

        summary["frontier"] = plot_frontier(summary, out / FRONTIER_PLOT_NAME)
    text = json.dumps(json_safe(summary), indent=2, default=str)
    atomic_write_bytes(out / SUMMARY_NAME, lambda f: f.write(text.encode()))
    from memopt.harness.bench.plots import plot_compare, plot_sweeps

    plot_compare(summary, out / PLOT_NAME)
    if sweeps:
        plot_sweeps(summary, out / SWEEP_PLOT_NAME)
    return summary


def _block_tokens(data: PreparedData, seq_len: int) -> int:
    """Training tokens that batches are drawn from: whole blocks of ``seq_len`` (one pass = this many)."""
    return (len(data.train) // seq_len) * seq_len


# ------------------------------------------------------------------------------------------ summary


def _spread_json(value: Spread) -> dict[str, Any]:
    return {"mean": value.mean, "sd": value.sd, "n": value.n}


def _curve(runs: list[TrainResult]) -> list[dict[str, Any]]:
    """Mean, spread, minimum and maximum of the validation loss over seeds at each evaluation."""
    by_tokens: dict[int, list[float]] = {}
    for run in runs:
        for e in run.evals:
            by_tokens.setdefault(e["tokens"], []).append(e["val_loss"])
    curve = []
    for tokens in sorted(by_tokens):
        values = by_tokens[tokens]
        s = spread(values)
        curve.append({"tokens": tokens, "mean": s.mean, "sd": s.sd, "min": min(values), "max": max(values), "n": s.n})
    return curve


def summarize(
    config: CompareConfig, entries: dict[str, Entry], results: dict[str, list[TrainResult]], extra: dict[str, Any]
) -> dict[str, Any]:
    """The comparison's numbers: one row per optimizer, measured against the baseline seed by seed."""
    base_label = config.baseline_name()
    baseline_runs = results[base_label]
    train_tokens = extra.get("train_block_tokens") or 0
    per_seed_targets = [(r.final_val_loss, min((e["val_loss"] for e in r.evals), default=None)) for r in baseline_runs]

    def reach(runs: list[TrainResult], which: int) -> list[float | None]:
        out = []
        for run, targets in zip(runs, per_seed_targets, strict=True):
            target = targets[which]
            curve = [(e["tokens"], e["val_loss"]) for e in run.evals]
            out.append(tokens_to_reach(curve, target) if target is not None else None)
        return out

    base_reach = [reach(baseline_runs, 0), reach(baseline_runs, 1)]
    base_state = baseline_runs[0].state_bytes
    base_finals = [r.final_val_loss for r in baseline_runs if r.final_val_loss is not None]
    rows = []
    for label, runs in results.items():
        entry = entries[label]
        finals = [r.final_val_loss for r in runs if r.final_val_loss is not None]
        bests = [min(e["val_loss"] for e in r.evals) for r in runs if r.evals]
        row: dict[str, Any] = {
            "optimizer": label,
            "registry_name": entry.optimizer,
            "hparams": runs[0].hparams,
            "hparam_sources": entry.sources,
            "state_bytes": runs[0].state_bytes,
            "state_mib": runs[0].state_bytes / MIB,
            "state_pct_of_baseline": 100.0 * runs[0].state_bytes / base_state if base_state else None,
        }
        final, best = spread(finals), spread(bests)
        row.update(
            final_val_loss=final.mean,
            final_val_loss_sd=final.sd,
            final_val_ppl=perplexity(final.mean) if final.mean is not None else None,
            best_val_loss=best.mean,
            best_val_loss_sd=best.sd,
            seeds=len(runs),
        )
        for name, which in (("tokens_to_target", 0), ("tokens_to_best_target", 1)):
            reached = reach(runs, which)
            hits = [t for t in reached if t is not None]
            ratios = [t / b for t, b in zip(reached, base_reach[which], strict=True) if t is not None and b]
            every = len(hits) == len(runs)  # a mean over the seeds that reached it alone would flatter
            values = spread(hits) if every else Spread(None, None, 0)
            row[name] = values.mean
            row[f"{name}_sd"] = values.sd
            row[f"{name}_reached"] = len(hits)
            fraction = spread(ratios) if len(ratios) == len(runs) else Spread(None, None, 0)
            row[f"{name}_fraction"] = fraction.mean
            row[f"{name}_fraction_sd"] = fraction.sd
            row[f"{name}_per_seed"] = reached
        step_times = spread([r.median_step_time for r in runs if r.median_step_time is not None])
        loads = [r.extra.get("load", {}) for r in runs]
        row.update(
            tokens=runs[0].tokens,
            steps=runs[0].steps,
            passes=runs[0].tokens / train_tokens if train_tokens else None,
            stopped_by=runs[0].stopped_by,
            median_step_time_s=step_times.mean,
            median_step_time_sd=step_times.sd,
            tokens_per_s=config.base.tokens_per_step / step_times.mean if step_times.mean else None,
            busy_runs=sum(1 for load in loads if load.get("busy")),
            verdict=None,
            verdict_p=None,
            verdict_label=None,
            evals=runs[0].evals,
            curve=_curve(runs),
            runs=[
                {
                    "seed": config.base.seed + i,
                    "final_val_loss": r.final_val_loss,
                    "best_val_loss": min((e["val_loss"] for e in r.evals), default=None),
                    "median_step_time_s": r.median_step_time,
                    "load": r.extra.get("load"),
                    "out": r.out,
                    "evals": r.evals,
                }
                for i, r in enumerate(runs)
            ],
        )
        if label == base_label:
            row.update(verdict="baseline", verdict_label="baseline")
        else:
            verdict = welch_verdict(finals, base_finals)
            row.update(verdict=verdict.text, verdict_p=verdict.p_value, verdict_label=verdict.label)
        rows.append(row)
    _add_group_verdicts(rows, results, base_label)
    targets = [t for t, _ in per_seed_targets if t is not None]
    best_targets = [b for _, b in per_seed_targets if b is not None]
    busy = [load for runs in results.values() for load in (r.extra.get("load", {}) for r in runs)]
    summary = {
        "baseline": base_label,
        "target_val_loss": spread(targets).mean,
        "target_val_loss_per_seed": targets,
        "best_target_val_loss": spread(best_targets).mean,
        "best_target_val_loss_per_seed": best_targets,
        "baseline_tokens_to_target": spread([t for t in base_reach[0] if t is not None]).mean,
        "verdict_test": "Welch's t-test of the final val loss over seeds against the baseline, two-sided, 5% level",
        "load": {
            "busy_runs": sum(1 for load in busy if load.get("busy")),
            "runs": len(busy),
            "max_cpu_pressure": max(
                (load["cpu_pressure"] for load in busy if load.get("cpu_pressure") is not None), default=None
            ),
            "max_load_avg": max((load["load_avg"] for load in busy if load.get("load_avg") is not None), default=None),
        },
        "rows": rows,
        **extra,
    }
    summary["notes"] = notes(summary)
    return summary


#: the row that separates a compressed method from its per-group learning rates (see compare_recipe.VARIANTS)
GROUPS_LABEL = "adamw_groups"


def _add_group_verdicts(rows: list[dict[str, Any]], results: dict[str, list[TrainResult]], base_label: str) -> None:
    """Each row's Welch verdict against :data:`GROUPS_LABEL` too, when that row is compared but is not the
    baseline: AdamW with the compressed presets' parameter groups, so that a row's lead over the baseline
    can be told apart from the larger learning rate of its embeddings and norms."""
    if GROUPS_LABEL not in results or base_label == GROUPS_LABEL:
        return
    reference = [r.final_val_loss for r in results[GROUPS_LABEL] if r.final_val_loss is not None]
    for row in rows:
        if row["optimizer"] in (GROUPS_LABEL, base_label):
            continue
        finals = [r.final_val_loss for r in results[row["optimizer"]] if r.final_val_loss is not None]
        verdict = welch_verdict(finals, reference)
        row.update(
            verdict_vs_groups=verdict.text, verdict_vs_groups_p=verdict.p_value, verdict_vs_groups_label=verdict.label
        )


def notes(summary: dict[str, Any]) -> list[str]:
    """The lines printed under the table: targets, the test, a busy machine, repeated data, grid edges."""
    base = summary["baseline"]
    lines = []
    target, best = summary.get("target_val_loss"), summary.get("best_target_val_loss")
    if target is not None:
        lines.append(
            f"target: each seed's {base} final val loss (mean {target:.4f}); best target: its lowest val loss "
            f"(mean {best:.4f}); x {base} = tokens / {base}'s own, per seed"
        )
    seeds = len(summary.get("seeds", [])) or 1
    lines.append(
        f"verdict: Welch's t-test of final val loss over {seeds} seed(s) against {base}, two-sided, 5% level"
        + ("" if seeds > 1 else " (needs --seeds 2 or more)")
    )
    against_groups = [
        f"{r['optimizer']} {r['verdict_vs_groups']}" for r in summary["rows"] if r.get("verdict_vs_groups")
    ]
    if against_groups:
        lines.append(f"verdict against {GROUPS_LABEL} (the same test): " + ", ".join(against_groups))
    load = summary.get("load", {})
    if load.get("busy_runs"):
        lines.append(_busy_note(load, summary.get("machine", {})))
    repeated = [r["optimizer"] for r in summary["rows"] if r.get("passes") and r["passes"] > 1]
    if repeated:
        lines.append(
            f"warning: {', '.join(repeated)} trained on more than one pass over the data (repeated tokens); "
            "give --data a larger corpus or fewer --max-tokens"
        )
    for sweep in summary.get("tuning", {}).get("sweeps", []):
        if sweep.get("warning"):
            lines.append("warning: " + sweep["warning"])
    return lines


def _busy_note(load: dict[str, Any], machine: dict[str, Any]) -> str:
    pressure, average = load.get("max_cpu_pressure"), load.get("max_load_avg")
    measures = []
    if pressure is not None:
        measures.append(f"CPU pressure up to {100 * pressure:.0f}%")
    if average is not None:
        measures.append(f"load average up to {average:.1f} on {machine.get('cpu_count', '?')} cores")
    return (
        f"step times: the machine was busy during {load['busy_runs']} of {load['runs']} runs "
        f"({', '.join(measures)}); they say little about the optimizers"
    )


def _fmt(value: float | None, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def _lr_cell(hparams: dict[str, Any]) -> str:
    lr = hparams.get("lr")
    plain = hparams.get(opt_lib.PLAIN_LR)
    text = _fmt(lr, ".3g")
    return text if plain is None or plain == lr else f"{text}/{plain:.3g}"


def _reach_cell(row: dict[str, Any], name: str) -> str:
    if row[name] is None:
        reached = row[f"{name}_reached"]
        return "not reached" if reached == 0 else f"{reached}/{row['seeds']} reached"
    return format_spread(Spread(row[name], row[f"{name}_sd"], row["seeds"]), ",.0f")


def format_table(summary: dict[str, Any]) -> str:
    """The comparison as a fixed-width text table (what ``memopt compare`` prints), cells without spaces."""
    base = summary["baseline"]
    headers = [
        "optimizer",
        "lr",
        "state MiB",
        f"% {base} state",
        "val loss",
        "best val loss",
        f"tokens to {base} loss",
        f"x {base}",
        f"tokens to {base} best",
        f"x {base} best",
        "passes",
        "step ms",
        "verdict",
    ]
    lines = []
    for row in summary["rows"]:
        n = row["seeds"]
        step = row["median_step_time_s"]
        step_sd = row["median_step_time_sd"]
        lines.append(
            [
                row["optimizer"],
                _lr_cell(row["hparams"]),
                _fmt(row["state_mib"], ".3f"),
                _fmt(row["state_pct_of_baseline"], ".1f"),
                format_spread(Spread(row["final_val_loss"], row["final_val_loss_sd"], n), ".4f"),
                format_spread(Spread(row["best_val_loss"], row["best_val_loss_sd"], n), ".4f"),
                _reach_cell(row, "tokens_to_target"),
                format_spread(
                    Spread(row["tokens_to_target_fraction"], row["tokens_to_target_fraction_sd"], n), ".3f", "-"
                ),
                _reach_cell(row, "tokens_to_best_target"),
                format_spread(
                    Spread(row["tokens_to_best_target_fraction"], row["tokens_to_best_target_fraction_sd"], n),
                    ".3f",
                    "-",
                ),
                _fmt(row["passes"], ".3f"),
                format_spread(
                    Spread(None if step is None else 1000 * step, None if step_sd is None else 1000 * step_sd, n), ".1f"
                ),
                row["verdict"] or "-",
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    rule = "  ".join("-" * w for w in widths)

    def render(cells: list[str]) -> str:
        last = len(cells) - 1
        padded = [
            c.ljust(w) if i in (0, last) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([render(headers), rule, *(render(line) for line in lines)])


# ------------------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser, count: Any = int) -> None:
    """Register ``memopt compare``'s own flags (the run flags shared with ``train`` are added by the CLI).

    Args:
        parser: the ``compare`` subcommand's parser.
        count: the parser of token counts such as ``2M`` (the CLI's), for ``--tune-tokens``.
    """
    group = parser.add_argument_group("comparison")
    group.add_argument(
        "--optimizers",
        default=None,
        metavar="A,B,...",
        help=f"row labels: registry names, LABEL=NAME, or adamw_groups (AdamW with its own lr, plain_lr, for "
        f"embeddings and norms, like the Subset-Norm presets) (default {','.join(DEFAULT_OPTIMIZERS)})",
    )
    group.add_argument(
        "--baseline", default=None, metavar="NAME", help="the row the others are measured against (default adamw)"
    )
    group.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help=f"runs per optimizer, seeds --seed, --seed+1, ... (default {recipe.DEFAULT_SEEDS}; 1 gives no verdict)",
    )
    group.add_argument(
        "--tune",
        default=None,
        metavar="KEY,...",
        help="sweep these hyperparameters per optimizer first, one after the other, e.g. lr or lr,plain_lr "
        "(plain_lr: the lr of the embeddings and norms, for every optimizer); LABEL:KEY for one row alone, "
        "e.g. lr,adamw_groups:plain_lr",
    )
    group.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="[OPT:]KEY=SPEC",
        help="a sweep's values: LOW:HIGH:N (log-spaced) or 'V1;V2;...'; repeatable (default: --grid-points "
        "values over --grid-span decades each side of the current value)",
    )
    group.add_argument(
        "--grid-points",
        type=int,
        default=DEFAULT_POINTS,
        metavar="N",
        help=f"default grid size (default {DEFAULT_POINTS})",
    )
    group.add_argument(
        "--grid-span",
        type=float,
        default=DEFAULT_SPAN,
        metavar="DECADES",
        help=f"default grid half-width in decades (default {DEFAULT_SPAN:g})",
    )
    group.add_argument(
        "--tune-tokens",
        type=count,
        default=None,
        metavar="N",
        help="training tokens of each sweep run, the same for every optimizer (default: the comparison's budget)",
    )
    group.add_argument("--tune-seeds", type=int, default=1, metavar="N", help="seeds per sweep value (default 1)")
    group.add_argument(
        "--frontier",
        action="store_true",
        help="also plot final validation loss against optimizer-state bytes, Pareto front marked (frontier.png)",
    )
    group.add_argument(
        "--registry-lrs",
        action="store_true",
        help="use the registry's learning rates instead of those swept for the preset (docs/results.md)",
    )


def base_config(preset: str | None, settings: dict[str, Any], out: str) -> TrainConfig:
    """The shared run settings: the preset's recipe, then compare's (:func:`compare_recipe.compare_recipe`),
    then the flags in ``settings`` (None = not given)."""
    from memopt.harness.train.config import make_config

    given = {k: v for k, v in settings.items() if v is not None and k != "preset"}
    layered = recipe.compare_recipe(preset or TrainConfig.preset) if not given.get("model_config") else {}
    if "max_tokens" in given and "max_steps" not in given:
        layered.pop("max_steps", None)  # a token budget replaces the recipe's step count
    return make_config(preset, **{**layered, **given, "save_checkpoints": False, "out": out})


def run_cli(args: argparse.Namespace, settings: dict[str, Any]) -> int:
    """``memopt compare``: build the comparison from the parsed flags, run it, print the table."""
    from memopt.harness.train.distributed import launched

    if launched():
        raise ConfigError(
            "memopt compare runs in one process; under torchrun, train each optimizer with `memopt train` "
            "(same flags) and compare their run folders."
        )
    names = (
        [n.strip() for n in args.optimizers.split(",") if n.strip()] if args.optimizers else list(DEFAULT_OPTIMIZERS)
    )
    out = args.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}"
    config = CompareConfig(
        optimizers=names,
        base=base_config(args.preset, settings, out),
        hparams=opt_lib.parse_assignments(args.opt),
        baseline=args.baseline,
        out=out,
        seeds=recipe.DEFAULT_SEEDS if args.seeds is None else args.seeds,
        tune=parse_tune(args.tune),
        grids=[parse_grid(item) for item in args.grid],
        grid_points=args.grid_points,
        grid_span=args.grid_span,
        tune_tokens=args.tune_tokens,
        tune_seeds=args.tune_seeds,
        use_tuned=not args.registry_lrs,
        frontier=args.frontier,
    )
    quiet = bool(args.quiet)
    summary = run_compare(
        config,
        log=(lambda *a, **k: None) if quiet else print,
        command="memopt " + " ".join(getattr(args, "argv", [])),
        progress_stream=io.StringIO() if quiet else None,
    )
    print(summary["table"])
    if not quiet:
        print("\n".join(summary["notes"]))
        print(f"\nwrote {out}/summary.json, {out}/compare.png" + (f", {out}/sweep.png" if config.tune else "")
              + (f", {out}/frontier.png" if config.frontier else "")
              + " and each run's metrics.jsonl")  # fmt: skip
    return 0
