"""The ``memopt`` command line: ``compare`` (the main job), ``train``, ``memory``, ``list`` and ``experiment``.

Each subcommand registers itself with an ``_add_<name>`` function and runs through a ``_run_<name>``
function; later subcommands (``bench``) plug in the same way. Bad input raises
:class:`memopt.harness.train.errors.HarnessError`, printed as ``memopt: error: ...`` with exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence

from memopt.harness.train.errors import ConfigError, HarnessError, NonFiniteLossError

_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def count(text: str) -> int:
    """Parse a token count such as ``500000``, ``200k``, ``1.3B``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbgKMBG]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; use e.g. 500000, 200k, 1.3B")
    return int(float(match.group(1)) * _SUFFIXES.get(match.group(2).lower(), 1))


def duration(text: str) -> float:
    """Parse a wall time such as ``90``, ``90s``, ``5m``, ``1.5h`` into seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhSMH]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use e.g. 90, 90s, 5m, 1.5h")
    return float(match.group(1)) * _SECONDS.get(match.group(2).lower() or "s", 1)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``train`` and ``compare``. Defaults are None so the preset's recipe applies."""
    from memopt.harness.train.models import PRESETS
    from memopt.harness.train.schedule import SCHEDULES
    from memopt.harness.train.tokenizer import KINDS

    model = parser.add_argument_group("model")
    model.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help=f"model preset and its training recipe: {', '.join(PRESETS)} (default: small)",
    )
    model.add_argument(
        "--model-config",
        default=None,
        metavar="PATH",
        help="a transformers causal-LM config.json to use instead of the preset's model",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="text file, JSON Lines file with a 'text' field, or directory of them "
        "or builtin:NAME (default: builtin:sympy, the source of the installed sympy package; "
        "builtin:python-reference is the small Python language reference)",
    )
    data.add_argument(
        "--tokenizer", default=None, choices=KINDS, help="BPE trained on the data, or bytes (default bpe)"
    )
    data.add_argument("--vocab-size", type=int, default=None, metavar="N", help="BPE vocabulary size")
    data.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        metavar="F",
        help="share of the text held out for validation (default 0.05)",
    )
    data.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="tokenized-data cache (default $MEMOPT_CACHE_DIR or ~/.cache/memopt)",
    )
    data.add_argument("--seq-len", type=int, default=None, metavar="N", help="tokens per sequence")
    data.add_argument("--batch-size", type=int, default=None, metavar="N", help="sequences per microbatch")
    data.add_argument("--grad-accum", type=int, default=None, metavar="N", help="microbatches per optimizer step")
    optim = parser.add_argument_group("optimizer")
    optim.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (default: the registry's recommended)"
    )
    optim.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="[OPTIMIZER:]KEY=VALUE",
        help="any optimizer hyperparameter, e.g. --opt rank=64 --opt proj_type=svd; repeatable",
    )
    optim.add_argument(
        "--clip", type=float, default=None, metavar="NORM", help="gradient-norm clip, 0 = off (default 1.0)"
    )
    optim.add_argument("--schedule", default=None, choices=SCHEDULES, help="LR schedule after warm-up (default cosine)")
    optim.add_argument("--warmup-steps", type=int, default=None, metavar="N", help="default: 10%% of the schedule")
    optim.add_argument(
        "--min-lr-ratio", type=float, default=None, metavar="F", help="cosine floor / peak lr (default 0.1)"
    )
    optim.add_argument("--restart-steps", type=int, default=None, metavar="N", help="SGDR first period")
    optim.add_argument("--restart-mult", type=int, default=None, metavar="N", help="SGDR period multiplier")
    optim.add_argument(
        "--schedule-steps",
        type=int,
        default=None,
        metavar="N",
        help="schedule length if not the step limit (to stop early and --resume later)",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--max-steps", type=int, default=None, metavar="N", help="optimizer steps")
    run.add_argument("--max-tokens", type=count, default=None, metavar="N", help="training tokens, e.g. 2M")
    run.add_argument("--max-time", type=duration, default=None, metavar="T", help="wall time, e.g. 90s, 10m")
    run.add_argument(
        "--dtype",
        default=None,
        choices=("auto", "fp32", "bf16"),
        help="bf16 autocast or fp32 (default auto: bf16 on a GPU that has it)",
    )
    run.add_argument(
        "--param-dtype",
        default=None,
        choices=("fp32", "bf16", "bf16-sr", "bf16-master"),
        help="parameters in fp32, or bf16 rounded to nearest, stochastically (sr), or with an fp32 master copy",
    )
    run.add_argument(
        "--sparsity",
        type=float,
        default=None,
        metavar="F",
        help="prune this fraction of the linear weights by magnitude at initialisation, kept zero (default 0)",
    )
    run.add_argument(
        "--activation-checkpointing",
        action="store_true",
        default=None,
        help="recompute activations in backward to save memory",
    )
    run.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default auto)")
    run.add_argument(
        "--parallel",
        default=None,
        choices=("fsdp", "ddp"),
        help="under torchrun: shard the model with FSDP2 (default) or replicate it with DDP",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch (default: torch's, one per core); 1 is steadier on a busy machine",
    )
    run.add_argument("--eval-every", type=int, default=None, metavar="N", help="evaluate every N steps")
    run.add_argument("--eval-batches", type=int, default=None, metavar="N", help="fixed validation batches")
    run.add_argument("--seed", type=int, default=None, help="model init and data order (default 0)")
    run.add_argument("--out", default=None, metavar="DIR", help="run folder")
    run.add_argument("--quiet", action="store_true", default=None, help="no progress bar or messages")


def _settings(args: argparse.Namespace, **extra) -> dict:
    """Keyword arguments for :func:`memopt.harness.train.config.make_config` from the parsed flags."""
    names = [
        "model_config",
        "data",
        "tokenizer",
        "vocab_size",
        "val_fraction",
        "cache_dir",
        "seq_len",
        "batch_size",
        "grad_accum",
        "lr",
        "clip",
        "schedule",
        "warmup_steps",
        "min_lr_ratio",
        "restart_steps",
        "restart_mult",
        "schedule_steps",
        "max_steps",
        "max_tokens",
        "max_time",
        "dtype",
        "param_dtype",
        "sparsity",
        "activation_checkpointing",
        "device",
        "parallel",
        "eval_every",
        "eval_batches",
        "seed",
        "quiet",
    ]
    return {name: getattr(args, name) for name in names} | extra


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
    parser.add_argument("--optimizer", default="adamw", metavar="NAME", help="registry name (see `memopt list`)")
    _add_run_arguments(parser)
    parser.add_argument("--save-every", type=int, default=None, metavar="N", help="checkpoint every N steps")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow loading a checkpoint whose optimizer state holds Python objects (only files you wrote)",
    )
    return _run_train


def _run_train(args: argparse.Namespace) -> int:
    from memopt.harness.train.config import make_config
    from memopt.harness.train.loop import Trainer
    from memopt.harness.train.optimizers import parse_assignments

    if args.resume and args.out is None:
        raise ConfigError("--resume: give --out DIR, the folder of the run to continue.")
    assignments = parse_assignments(args.opt)
    scoped = [scope for scope in assignments if scope not in (None, args.optimizer)]
    if scoped:
        raise ConfigError(f"--opt {scoped[0]}:...: this run trains {args.optimizer}; drop the '{scoped[0]}:' prefix.")
    hparams = {**assignments.get(None, {}), **assignments.get(args.optimizer, {})}
    config = make_config(
        args.preset,
        **_settings(args),
        optimizer=args.optimizer,
        hparams=hparams,
        save_every=args.save_every,
        out=args.out or f"runs/train-{_timestamp()}",
        resume=args.resume,
        trust_checkpoint=args.trust_checkpoint,
    )
    trainer = Trainer(config)
    if not config.quiet and trainer.is_main:  # under torchrun, rank 0 speaks for all
        lr = trainer.hparams.get("lr")
        print(
            f"memopt train: {config.optimizer} (lr {lr:g}) on {trainer.data.meta['corpus']}; model "
            f"{config.model_config or config.preset} ({trainer.num_params:,} parameters); {trainer.total_steps} "
            f"steps x {config.tokens_per_step:,} tokens; device {trainer.device}"
            + (f" x {trainer.dist.world_size} processes ({trainer.dist.parallel})" if trainer.dist else "")
            + f"; run folder {config.out}",
            file=sys.stderr,
        )
    result = trainer.run()
    if not trainer.is_main:
        return 0
    ppl = "n/a" if result.final_val_ppl is None else f"{result.final_val_ppl:.2f}"
    loss = "n/a" if result.final_val_loss is None else f"{result.final_val_loss:.4f}"
    speed = "n/a" if result.tokens_per_s is None else f"{result.tokens_per_s:,.0f}"
    state = f"state {result.state_bytes / 2**20:.3f} MiB"
    per_rank = result.extra.get("state_bytes_per_rank")
    if per_rank:
        state += f" in all ({', '.join(f'{b / 2**20:.3f}' for b in per_rank)} MiB on ranks 0-{len(per_rank) - 1})"
    print(
        f"{result.optimizer}: {result.steps} steps, {result.tokens:,} tokens "
        f"(stopped by {result.stopped_by}); "
        f"val loss {loss}, ppl {ppl}; {state}; {speed} tokens/s\n"
        f"run folder: {result.out}"
    )
    return 0


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
    _add_run_arguments(parser)
    return _run_compare


def _run_compare(args: argparse.Namespace) -> int:
    from memopt.harness.bench.compare import run_cli

    return run_cli(args, _settings(args))


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


def _add_experiment(subparsers) -> Callable:
    from memopt.harness import experiments

    experiments.add_subparser(subparsers)
    return experiments.run


_SUBCOMMANDS = (_add_compare, _add_train, _add_memory, _add_list, _add_experiment)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    """The argument parser and the function that runs each subcommand."""
    parser = argparse.ArgumentParser(
        prog="memopt", description="Memory-efficient optimizers for PyTorch: compare, train, memory, list, experiment."
    )
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
        print(f"memopt: stopped: {exc}", file=sys.stderr)
        return 1
    except HarnessError as exc:
        print(f"memopt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "memopt: interrupted; the last checkpoint (if any) is intact; continue with --resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
