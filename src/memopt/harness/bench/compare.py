"""``memopt compare``: the same model, data and seed trained with several optimizers, side by side.

Each optimizer gets the registry's recommended hyperparameters unless overridden. The result is a table
(state memory, share of the baseline's state, final validation loss and perplexity, tokens needed to reach
the baseline's final validation loss, median step time, tokens/s), ``summary.json`` holding the same
numbers, each run's metrics, and ``compare.png``.

Tokens-to-target: the first point where an optimizer's validation curve reaches the baseline's final
validation loss, linearly interpolated between the two evaluations around the crossing. The baseline's
own figure is computed the same way, so its fraction is 1.0 unless its curve dipped below its final loss
earlier.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from memopt.harness.train import optimizers as opt_lib
from memopt.harness.train.checkpoint import atomic_write_bytes
from memopt.harness.train.config import TrainConfig
from memopt.harness.train.data import check_sizes, prepare_data
from memopt.harness.train.errors import ConfigError
from memopt.harness.train.loop import Trainer, TrainResult

DEFAULT_OPTIMIZERS = ("adamw", "adamw_sn", "adamw_snsm")
SUMMARY_NAME = "summary.json"
PLOT_NAME = "compare.png"
MIB = 2**20


@dataclass
class CompareConfig:
    """A comparison of optimizers.

    Attributes:
        optimizers: registry names, in table order.
        base: settings shared by every run (its ``optimizer``, ``hparams`` and ``out`` are replaced).
        hparams: per-optimizer overrides, ``{name: {key: value}}``; key None applies to all.
        baseline: the optimizer the others are measured against (default: ``adamw`` if compared,
            else the first).
        out: the run folder.
    """

    optimizers: list[str] = field(default_factory=lambda: list(DEFAULT_OPTIMIZERS))
    base: TrainConfig = field(default_factory=TrainConfig)
    hparams: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    baseline: str | None = None
    out: str = "runs/compare"

    def baseline_name(self) -> str:
        """The baseline optimizer's name."""
        if self.baseline is not None:
            return self.baseline
        return "adamw" if "adamw" in self.optimizers else self.optimizers[0]

    def validate(self) -> None:
        """Raise :class:`ConfigError` for an empty, duplicated or unknown optimizer list or baseline."""
        if not self.optimizers:
            raise ConfigError("--optimizers: give at least one optimizer name, e.g. --optimizers adamw,adamw_sn.")
        for name in self.optimizers:
            opt_lib.check_name(name)
        duplicates = sorted({n for n in self.optimizers if self.optimizers.count(n) > 1})
        if duplicates:
            raise ConfigError(f"--optimizers: {', '.join(duplicates)} listed twice; list each optimizer once.")
        if self.baseline_name() not in self.optimizers:
            raise ConfigError(
                f"--baseline {self.baseline_name()}: not among --optimizers {','.join(self.optimizers)}; "
                "add it or pick one of them."
            )
        unknown_scopes = [s for s in self.hparams if s is not None and s not in self.optimizers]
        if unknown_scopes:
            raise ConfigError(
                f"--opt {unknown_scopes[0]}:...: {unknown_scopes[0]!r} is not among --optimizers "
                f"{','.join(self.optimizers)}."
            )


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


def machine_info(device: str) -> dict[str, Any]:
    """Where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def summarize(config: CompareConfig, results: dict[str, TrainResult], extra: dict[str, Any]) -> dict[str, Any]:
    """The comparison's numbers: one row per optimizer, measured against the baseline."""
    baseline = results[config.baseline_name()]
    target = baseline.final_val_loss
    curves = {name: [(e["tokens"], e["val_loss"]) for e in r.evals] for name, r in results.items()}
    baseline_tokens = tokens_to_reach(curves[config.baseline_name()], target) if target is not None else None
    rows = []
    for name in config.optimizers:
        result = results[name]
        reached = tokens_to_reach(curves[name], target) if target is not None else None
        rows.append(
            {
                "optimizer": name,
                "hparams": result.hparams,
                "state_bytes": result.state_bytes,
                "state_mib": result.state_bytes / MIB,
                "state_pct_of_baseline": 100.0 * result.state_bytes / baseline.state_bytes
                if baseline.state_bytes
                else None,
                "final_val_loss": result.final_val_loss,
                "final_val_ppl": result.final_val_ppl,
                "tokens": result.tokens,
                "steps": result.steps,
                "stopped_by": result.stopped_by,
                "tokens_to_target": reached,
                "tokens_to_target_fraction": reached / baseline_tokens if reached and baseline_tokens else None,
                "median_step_time_s": result.median_step_time,
                "tokens_per_s": result.tokens_per_s,
                "evals": result.evals,
            }
        )
    return {
        "baseline": config.baseline_name(),
        "target_val_loss": target,
        "baseline_tokens_to_target": baseline_tokens,
        "rows": rows,
        **extra,
    }


def _fmt(value: float | None, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def format_table(summary: dict[str, Any]) -> str:
    """The comparison as a fixed-width text table (what ``memopt compare`` prints)."""
    base = summary["baseline"]
    headers = [
        "optimizer",
        "state MiB",
        f"% {base} state",
        "val loss",
        "val ppl",
        f"tokens to {base} loss",
        f"x {base} tokens",
        "step ms",
        "tokens/s",
    ]
    lines = []
    for row in summary["rows"]:
        lines.append(
            [
                row["optimizer"],
                _fmt(row["state_mib"], ".3f"),
                _fmt(row["state_pct_of_baseline"], ".1f"),
                _fmt(row["final_val_loss"], ".4f"),
                _fmt(row["final_val_ppl"], ".2f"),
                _fmt(row["tokens_to_target"], ",.0f", "not reached"),
                _fmt(row["tokens_to_target_fraction"], ".3f", "-"),
                _fmt(None if row["median_step_time_s"] is None else 1000 * row["median_step_time_s"], ".1f"),
                _fmt(row["tokens_per_s"], ",.0f"),
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    rule = "  ".join("-" * w for w in widths)

    def render(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded)

    return "\n".join([render(headers), rule, *(render(line) for line in lines)])


def run_compare(config: CompareConfig, log=print, command: str | None = None) -> dict[str, Any]:
    """Train every optimizer of ``config`` on the same model, data and seed; write and return the summary.

    Args:
        config: the comparison.
        log: where progress lines go (``print`` to stdout by default; a no-op to silence).
        command: the command line that started the comparison, recorded in the summary.

    Raises:
        HarnessError: bad input (data, preset, optimizer, hyperparameters, an occupied ``out`` folder).
    """
    config.validate()
    out = Path(config.out)
    if (out / SUMMARY_NAME).exists():
        raise ConfigError(f"--out {out}: the folder already holds a comparison ({SUMMARY_NAME}); choose another --out.")
    started = time.time()
    data = prepare_data(config.base.data_config())
    check_sizes(data, config.base.seq_len, config.base.batch_size)
    runs = {}
    for name in config.optimizers:
        hparams = {**config.hparams.get(None, {}), **config.hparams.get(name, {})}
        runs[name] = dataclasses.replace(config.base, optimizer=name, hparams=hparams, out=str(out / name))
    first = Trainer(runs[config.optimizers[0]], data)
    for name in config.optimizers[1:]:  # a bad hyperparameter fails now, before any training
        hidden = getattr(first.model_config, "hidden_size", None)
        opt_lib.build(first.model, name, opt_lib.resolve_hparams(name, runs[name].hparams, runs[name].lr, hidden))
    log(
        f"memopt compare: {', '.join(config.optimizers)} on {data.meta['corpus']} "
        f"({data.meta['train_tokens']:,} training tokens, vocabulary {data.vocab_size}); model "
        f"{config.base.model_config or config.base.preset} ({first.num_params:,} parameters); "
        f"{first.total_steps} steps x {config.base.tokens_per_step:,} tokens; device {first.device}"
    )
    results: dict[str, TrainResult] = {}
    device, num_params = str(first.device), first.num_params
    for name in config.optimizers:
        began = time.time()
        trainer = first if first is not None else Trainer(runs[name], data)
        first = None  # free each model once trained
        results[name] = trainer.run()
        del trainer
        r = results[name]
        log(
            f"  {name}: val loss {_fmt(r.final_val_loss, '.4f')} after {r.tokens:,} tokens "
            f"({time.time() - began:.0f} s)"
        )
    extra = {
        "command": command,
        "config": dataclasses.asdict(config.base) | {"optimizer": None, "hparams": None, "out": None},
        "model": config.base.model_config or config.base.preset,
        "num_params": num_params,
        "data": data.meta,
        "tokens_per_step": config.base.tokens_per_step,
        "machine": machine_info(device),
        "wall_time_s": time.time() - started,
    }
    summary = summarize(config, results, extra)
    summary["table"] = format_table(summary)
    text = json.dumps(summary, indent=2, default=str)
    atomic_write_bytes(out / SUMMARY_NAME, lambda f: f.write(text.encode()))
    from memopt.harness.bench.plots import plot_compare

    plot_compare(summary, out / PLOT_NAME)
    return summary
