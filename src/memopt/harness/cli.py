"""The ``memopt`` command line: ``compare`` (the main job), ``train``, ``memory``, ``fit``, ``list`` and ``experiment``.

Each subcommand registers itself with an ``_add_<name>`` function and runs through a ``_run_<name>``
function; later subcommands (``bench``) plug in the same way. Bad input raises
:class:`memopt.harness.train.errors.HarnessError`, printed as ``memopt: error: ...`` with exit status 2;
every message printed for an error ends in exactly one full stop (:func:`sentence`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from memopt.harness.train.errors import ConfigError, HarnessError, NonFiniteLossError, sentence
from memopt.harness.train.options import Flag, Option, add_arguments, count, duration, options, settings_from

__all__ = ["build_parser", "count", "duration", "main", "sentence"]


def memopt_version() -> str:
    """The installed distribution's version (the package's own when run from a source tree)."""
    from importlib import metadata

    try:
        return metadata.version("memopt")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors end in a full stop like every other ``memopt`` error."""

    def error(self, message: str):
        super().error(sentence(message))


def _cli_only_options() -> list[Option]:
    """Flags of ``train`` and ``compare`` that are not fields of the run configuration: ``--opt`` (parsed
    into each optimizer's ``hparams``) and ``--threads`` (a setting of this process)."""
    return [
        Option("opt", str, None, Flag(
            "any optimizer hyperparameter, e.g. --opt rank=64 --opt proj_type=svd; repeatable", "optimizer",
            "[OPTIMIZER:]KEY=VALUE", repeat=True)),
        Option("threads", int, None, Flag(
            "CPU threads for torch; 1 is steadier on a busy machine", metavar="N",
            default_text="torch's, one per core")),
    ]  # fmt: skip


def _add_run_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """The run flags of ``command`` (``train`` or ``compare``), generated from :class:`TrainConfig`'s
    declarations. Their defaults are None, so that the preset's recipe applies."""
    from memopt.harness.train.config import RECIPES, TrainConfig

    recipe_keys = {key for recipe in RECIPES.values() for key in recipe}
    add_arguments(parser, [*options(TrainConfig, command), *_cli_only_options()], recipe_keys)


def _settings(args: argparse.Namespace, command: str) -> dict:
    """The run settings that ``command``'s flags set (None where not given), by :class:`TrainConfig` field."""
    from memopt.harness.train.config import TrainConfig

    return settings_from(args, options(TrainConfig, command))


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


# ---------------------------------------------------------------------------------------------- list


def _add_list(subparsers) -> Callable:
    subparsers.add_parser("list", help="list the optimizers", description="List the registry's optimizers.")
    return _run_list


def _run_list(args: argparse.Namespace) -> int:
    from memopt.harness.train.optimizers import optimizer_names

    names = optimizer_names()
    width = max(map(len, names), default=0)
    for name, description in names.items():
        print(f"{name.ljust(width)}  {description}")
    return 0


# ---------------------------------------------------------------------------------------------- train


def _add_train(subparsers) -> Callable:
    parser = subparsers.add_parser(
        "train",
        help="train one model with one optimizer",
        description="Train a LLaMA-style model with one optimizer; metrics, checkpoints and result go to --out.",
    )
    _add_run_arguments(parser, "train")
    return _run_train


def _run_train(args: argparse.Namespace) -> int:
    from memopt.harness.train.config import make_config
    from memopt.harness.train.loop import Trainer
    from memopt.harness.train.optimizers import parse_assignments

    settings = _settings(args, "train")
    if settings["resume"] and settings["out"] is None:
        raise ConfigError("--resume: give --out DIR, the folder of the run to continue.")
    config = make_config(**settings | {"out": settings["out"] or f"runs/train-{_timestamp()}"})
    assignments = parse_assignments(args.opt)
    scoped = [scope for scope in assignments if scope not in (None, config.optimizer)]
    if scoped:
        raise ConfigError(f"--opt {scoped[0]}:...: this run trains {config.optimizer}; drop the '{scoped[0]}:' prefix.")
    config.hparams = {**assignments.get(None, {}), **assignments.get(config.optimizer, {})}
    trainer = Trainer(config)
    if not config.quiet and trainer.processes.is_main:  # under torchrun, rank 0 speaks for all
        print(_train_banner(trainer), file=sys.stderr)
    result = trainer.run()
    if trainer.processes.is_main:
        print(_train_report(result))
    trainer.processes.finish()
    return 0


def _train_banner(trainer) -> str:
    """What ``memopt train`` is about to do (one line)."""
    config, processes = trainer.config, trainer.processes
    where = f"device {trainer.device}"
    if processes.world_size > 1:
        where += f" x {processes.world_size} processes ({processes.parallel})"
    return (
        f"memopt train: {config.optimizer} (lr {trainer.hparams.get('lr'):g}) on {trainer.data.meta['corpus']}; "
        f"model {config.model_config or config.preset} ({trainer.num_params:,} parameters); {trainer.total_steps} "
        f"steps x {config.tokens_per_step:,} tokens; {where}; run folder {config.out}"
    )


def _train_report(result) -> str:
    """What a finished ``memopt train`` run reached (two lines)."""
    from memopt.harness.train.metrics import format_metric

    ppl = format_metric(result.final_val_ppl, ".2f")
    loss = format_metric(result.final_val_loss, ".4f")
    speed = "n/a" if result.tokens_per_s is None else f"{result.tokens_per_s:,.0f}"
    state = f"state {result.state_bytes / 2**20:.3f} MiB"
    per_rank = result.extra.get("state_bytes_per_rank")
    if per_rank:
        state += f" in all ({', '.join(f'{b / 2**20:.3f}' for b in per_rank)} MiB on ranks 0-{len(per_rank) - 1})"
    return (
        f"{result.optimizer}: {result.steps} steps, {result.tokens:,} tokens "
        f"(stopped by {result.stopped_by}); "
        f"val loss {loss}, ppl {ppl}; {state}; {speed} tokens/s\n"
        f"run folder: {result.out}"
    )


# ---------------------------------------------------------------------------------------------- compare


def _add_compare(subparsers) -> Callable:
    from memopt.harness.bench import compare

    parser = subparsers.add_parser(
        "compare",
        help="compare optimizers on the same model, data and seeds (the main job)",
        description="Train the same model on the same data with several optimizers and compare state memory, "
        "validation loss against tokens, and speed, over several seeds, optionally after tuning each "
        "optimizer (--tune). Writes summary.json, metrics and compare.png.",
    )
    compare.add_arguments(parser, count)  # --optimizers, --baseline, --seeds, --tune, --grid, ...
    _add_run_arguments(parser, "compare")
    return _run_compare


def _run_compare(args: argparse.Namespace) -> int:
    from memopt.harness.bench.compare import run_cli

    return run_cli(args, _settings(args, "compare"))


# ---------------------------------------------------------------------------------------------- main


def _add_memory(subparsers) -> Callable:
    from memopt.harness.memory import plan

    parser = subparsers.add_parser(
        "memory",
        help="how much memory training needs: breakdown, peak, what each technique saves",
        description="Profile training steps of a model (estimate with fake tensors, or measure a real run): "
        "parameters, gradients, optimizer state, activations, temporaries and the peak, and what each "
        "technique (microbatches, checkpointing, precision, sparsity, optimizer) saves.",
    )
    plan.add_arguments(parser)
    return plan.run


def _add_fit(subparsers) -> Callable:
    from memopt.harness.memory import fit_command

    parser = subparsers.add_parser(
        "fit",
        help="training configurations that fit a memory budget, ranked, with their commands",
        description="Search optimizers and state formats, microbatch sizes, activation checkpointing and "
        "parameter precision (sparsity if allowed) for the configurations whose planned peak fits --budget, "
        "ranked by measured loss penalty and modelled speed; prints the `memopt train` command of each. Run "
        "flags of `memopt train` set the model and data, and fix an axis where they name one.",
    )
    _add_run_arguments(parser, "train")
    fit_command.add_arguments(parser)
    return _run_fit


def _run_fit(args: argparse.Namespace) -> int:
    from memopt.harness.memory import fit_command

    chosen = fit_command.run(args, _settings(args, "train"))
    if isinstance(chosen, int):
        return chosen
    print(f"starting: memopt train {' '.join(chosen)}", file=sys.stderr)
    return main(["train", *chosen])


def _add_experiment(subparsers) -> Callable:
    from memopt.harness import experiments

    experiments.add_subparser(subparsers)
    return experiments.run


_SUBCOMMANDS = (_add_compare, _add_train, _add_memory, _add_fit, _add_list, _add_experiment)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    """The argument parser and the function that runs each subcommand."""
    parser = _Parser(
        prog="memopt",
        description="Memory-efficient optimizers for PyTorch: compare, train, memory, fit, list, experiment.",
    )
    parser.add_argument("--version", action="version", version=f"memopt {memopt_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners = {}
    for add in _SUBCOMMANDS:
        runner = add(subparsers)
        runners[next(reversed(subparsers.choices))] = runner
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``memopt`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.argv = argv
    try:
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise ConfigError(f"--threads {args.threads}: must be at least 1.")
            import torch

            torch.set_num_threads(args.threads)
        return runners[args.command](args)
    except NonFiniteLossError as exc:
        print(f"memopt: stopped: {sentence(str(exc))}", file=sys.stderr)
        return 1
    except HarnessError as exc:
        print(f"memopt: error: {sentence(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "memopt: interrupted; the last checkpoint (if any) is intact; continue with --resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
