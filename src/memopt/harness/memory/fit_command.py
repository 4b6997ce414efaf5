"""``memopt fit``'s command line: the run flags of ``memopt train`` (model, data, and any axis to fix), the
budget and the search's own flags; it prints the configurations that fit and their ``memopt train`` commands.

A run flag that is also an axis of the search fixes that axis: ``--optimizer`` (one of
:data:`memopt.harness.memory.fit.OPTIMIZERS`), ``--param-dtype``, ``--dtype``, ``--activation-checkpointing``,
``--grad-accum`` (the split of the batch), ``--sparsity`` and ``--offload`` (``--offload-path`` fixes it to
``disk``). Not fixed, offload is searched over none, cpu and disk on CUDA, none and disk on a CPU device
(where host memory is the device's; see :mod:`memopt.harness.memory.fit`). The global batch is ``--batch-size`` x
``--grad-accum`` (the preset's recipe where not given), and every configuration keeps it. The other run flags
(``--preset``, ``--seq-len``, ``--data``, ``--max-steps``, ...) are repeated in each printed command.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from memopt.harness.memory.fit import (
    DEFAULT_MARGIN,
    OPTIMIZERS,
    Axes,
    Fitter,
    choices_from,
    format_result,
    parse_budget,
)
from memopt.harness.memory.speed import calibrate
from memopt.harness.train.errors import ConfigError

#: run settings that are axes of the search (filled in by each configuration's flags)
_AXES = ("batch_size", "grad_accum", "optimizer", "dtype", "param_dtype", "activation_checkpointing", "sparsity",
         "device", "offload")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``memopt fit`` beside the run flags."""
    group = parser.add_argument_group("fit")  # fmt: skip
    group.add_argument("--budget", required=True, type=str, metavar="SIZE",
                       help="device memory to fit in: 24GiB (2^30 bytes), 24GB (10^9 bytes), 512MiB, ...")
    group.add_argument("--margin", type=float, default=DEFAULT_MARGIN, metavar="F",
                       help=f"share of the budget kept free for what the planner misses (default {DEFAULT_MARGIN})")
    group.add_argument("--top", type=int, default=3, metavar="N", help="configurations to print (default 3)")
    group.add_argument("--confirm", type=int, default=1, metavar="N",
                       help="confirm this many with the full planner; the others show the screen's peak (default 1)")
    group.add_argument("--optimizers", action="append", default=[], metavar="A,B",
                       help=f"optimizer choices to search (default all: {', '.join(OPTIMIZERS)})")
    group.add_argument("--sparsity-levels", default=None, metavar="F,F",
                       help="also search these sparsity levels (default: no sparsity)")
    group.add_argument("--max-estimates", type=int, default=None, metavar="N",
                       help="full planner estimates at most in the confirmation (default: --confirm + 3)")
    group.add_argument("--calibrate", action="store_true",
                       help="time short steps of the real model on the device to calibrate tokens/s")
    group.add_argument("--run", action="store_true", help="start `memopt train` with the best configuration")


def _device(name: str | None) -> tuple[str, str, list[str]]:
    """(the device of the commands, the device to plan on, notes)."""
    name = name or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(name).type
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: not a device ({exc}); use cpu or cuda[:N].") from exc
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: memopt fit plans for cpu or cuda[:N].")
    if kind == "cuda" and not torch.backends.cuda.is_built():
        note = ("this torch has no CUDA support: the plan for CUDA was made with CPU tensors (the same shapes; only "
                "the attention kernel may differ)")  # fmt: skip
        return name, "cpu", [note]
    return name, name, []


def _axes(args: argparse.Namespace, settings: dict[str, Any], plan_device: str) -> Axes:
    axes = Axes()
    chosen = choices_from(args.optimizers)
    if settings.get("optimizer"):
        chosen = (settings["optimizer"],)
    if chosen:
        axes = Axes(choices=chosen)
    precisions = axes.precisions
    if plan_device == "cpu":  # bf16 autocast is searched for CUDA (CPUs without bf16 units run it slowly)
        precisions = tuple(p for p in precisions if p != "bf16-autocast")
    if settings.get("param_dtype"):
        precisions = (settings["param_dtype"],)
    if settings.get("dtype") == "bf16":
        precisions = tuple(p for p in precisions if p == "bf16-autocast") or ("bf16-autocast",)
    elif settings.get("dtype") == "fp32":
        precisions = tuple(p for p in precisions if p != "bf16-autocast")
    levels = (0.0,)
    if args.sparsity_levels:
        try:
            levels = (0.0, *sorted({float(v) for v in args.sparsity_levels.split(",") if v.strip()} - {0.0}))
        except ValueError as exc:
            raise ConfigError(f"--sparsity-levels {args.sparsity_levels!r}: give fractions, e.g. 0.5,0.9.") from exc
    if settings.get("sparsity") is not None:
        levels = (settings["sparsity"],)
    offload = ("none", "disk") if plan_device.startswith("cpu") else ("none", "cpu", "disk")
    if settings.get("offload_path"):
        offload = ("disk",)
    if settings.get("offload"):
        offload = (settings["offload"],)
    return Axes(
        choices=axes.choices,
        offload=offload,
        precisions=precisions,
        checkpointing=(True,) if settings.get("activation_checkpointing") else (False, True),
        microbatches=(settings["grad_accum"],) if settings.get("grad_accum") else None,
        sparsities=levels,
    )


def _kept_flags(settings: dict[str, Any], opts: list[str]) -> list[str]:
    """The run flags the user gave that are not axes, as command-line words."""
    from memopt.harness.train.config import TrainConfig
    from memopt.harness.train.options import options

    words = []
    for option in options(TrainConfig, "train"):
        value = settings.get(option.dest)
        if option.dest in _AXES or value is None or value is False:
            continue
        text = f"{value:g}" if isinstance(value, float) else str(value)
        words += [option.name] if value is True else [option.name, text]
    for text in opts:
        words += ["--opt", text]
    return words


def run(args: argparse.Namespace, settings: dict[str, Any]) -> list[str] | int:
    """Run ``memopt fit``; print the report. Returns the best configuration's ``train`` arguments when
    ``--run`` is given and one fits, else the exit status (1 when nothing fits).

    Raises:
        ConfigError: a bad budget, device, axis, model or data flag.
    """
    from memopt.harness.memory.workloads import lm_workload, preset_workload
    from memopt.harness.train.config import make_config
    from memopt.harness.train.models import file_config

    budget = parse_budget(args.budget)
    if args.top < 1:
        raise ConfigError(f"--top {args.top}: print at least one configuration.")
    device, plan_device, notes = _device(settings.get("device"))
    config = make_config(**{k: v for k, v in settings.items() if k != "device"})
    if config.model_config:
        from pathlib import Path

        workload = lm_workload(file_config(config.model_config), config.seq_len, Path(config.model_config).stem)
    else:
        workload = preset_workload(config.preset, config.seq_len, config.vocab_size)
    batch = config.batch_size * config.grad_accum
    axes = _axes(args, settings, plan_device)
    if args.confirm < 1:
        raise ConfigError(f"--confirm {args.confirm}: confirm at least one configuration with the planner.")
    fitter = Fitter(workload, batch, axes, plan_device)
    if args.calibrate:
        if plan_device != device:
            raise ConfigError(f"--calibrate: times steps on the device, and {device} is not available here.")
        from memopt.harness.memory.fit import Candidate
        from memopt.harness.train.optimizers import resolve_hparams

        hidden = workload.info.get("hidden_size")
        optimizers = {}
        for choice in axes.choices:
            probe = Candidate(choice, "fp32", False, 1, 1)
            optimizers[choice] = (probe.optimizer, resolve_hparams(probe.optimizer, probe.hparams(), None, hidden))
        fitter.speed = calibrate(fitter.speed, workload, device, axes.precisions, optimizers)
        fitter.rescore()
    result = fitter.fit(budget, args.margin, args.confirm, args.top, args.max_estimates or args.confirm + 3)
    result.notes = notes + result.notes
    command = ["memopt", "train", *_kept_flags(settings, getattr(args, "opt", []) or []), "--device", device]
    print(
        f"memopt fit: {workload.name}, {fitter.num_params:,} parameters, {batch} samples per step "
        f"of {workload.sample_shape[0] if workload.info.get('seq_len') else 1} tokens, device {device}"
    )
    print(format_result(result, command, args.top))
    if not result.fits:
        return 1
    if args.run:
        return [*command[2:], *result.fits[0].candidate.train_flags()]
    return 0
