"""``memopt memory``: the command line of the memory planner.

It builds a :class:`~memopt.harness.memory.workloads.Workload` from a harness preset, a ``transformers`` config
file or a module factory, profiles it in estimate or measure mode (:mod:`memopt.harness.memory.profile`) and
prints the breakdown, with what each technique in the mix saves (the same run without it), and JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from memopt.harness.memory.breakdown import format_breakdown
from memopt.harness.memory.offload import TIERS, format_offload, parameter_state_bytes, plan_offload
from memopt.harness.memory.profile import profile, technique_savings
from memopt.harness.memory.techniques import PRECISIONS, SPARSE_STORAGES, Techniques
from memopt.harness.memory.workloads import IMAGE_PRESETS, Workload, lm_workload, module_workload, preset_workload
from memopt.harness.train.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``memopt memory``."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help=f"harness preset, llama-7b, or an image net ({', '.join(IMAGE_PRESETS)}); default small",
    )
    model.add_argument("--model-config", default=None, metavar="PATH", help="a transformers causal-LM config.json")
    model.add_argument(
        "--factory", default=None, metavar="MODULE:FUNCTION", help="any function returning an nn.Module classifier"
    )
    model.add_argument(
        "--input-shape", default=None, metavar="C,H,W", help="one sample's shape for --factory, e.g. 3,32,32"
    )
    model.add_argument("--seq-len", type=int, default=None, metavar="N", help="tokens per sequence (LMs)")
    model.add_argument(
        "--vocab-size", type=int, default=None, metavar="N", help="vocabulary of tokenizer-sized presets"
    )
    run = parser.add_argument_group("training step")
    run.add_argument("--optimizer", default="adamw", metavar="NAME", help="registry name (default adamw)")
    run.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="optimizer hyperparameter")
    run.add_argument("--batch-size", type=int, default=None, metavar="N", help="samples per optimizer step")
    run.add_argument("--microbatches", type=int, default=1, metavar="N", help="gradient accumulation (default 1)")
    run.add_argument("--activation-checkpointing", action="store_true", help="recompute activations in backward")
    run.add_argument("--precision", default="fp32", choices=PRECISIONS, help="parameter and compute precision")
    run.add_argument("--sparsity", type=float, default=0.0, metavar="F", help="fraction of weights pruned (0..1)")
    run.add_argument("--sparse-storage", default="compact", choices=SPARSE_STORAGES, help="how pruned weights are held")
    run.add_argument("--offload", default=None, choices=TIERS, help="also plan the optimizer state offloaded there")
    how = parser.add_argument_group("profiling")
    how.add_argument("--mode", default="estimate", choices=("estimate", "measure"), help="fake tensors or a real run")
    how.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    how.add_argument("--steps", type=int, default=2, metavar="N", help="optimizer steps profiled (default 2)")
    how.add_argument("--seed", type=int, default=0)
    how.add_argument("--no-savings", action="store_true", help="skip the runs without each technique")
    how.add_argument("--json", default=None, metavar="PATH", help="write the breakdown as JSON ('-' for stdout)")
    how.add_argument("--snapshot", default=None, metavar="PATH", help="CUDA measure: write an allocator snapshot")


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"--input-shape {text!r}: give comma-separated sizes, e.g. 3,32,32.") from exc


def workload_from_args(args: argparse.Namespace) -> tuple[Workload, int]:
    """The workload and the batch size the flags describe (recipe defaults for presets).

    Raises:
        ConfigError: more than one model source, or a bad preset, file, factory or shape.
    """
    from memopt.harness.train.config import RECIPES
    from memopt.harness.train.models import file_config

    sources = [flag for flag, value in (("--model-config", args.model_config), ("--factory", args.factory)) if value]
    if args.preset:
        sources.insert(0, "--preset")
    if len(sources) > 1:
        raise ConfigError(f"{' and '.join(sources)}: give one model source.")
    recipe = RECIPES.get(args.preset or "small", {})
    seq_len = args.seq_len or recipe.get("seq_len", 256)
    batch = args.batch_size or recipe.get("batch_size", 8)
    if args.factory:
        if not args.input_shape:
            raise ConfigError("--factory: give one sample's shape with --input-shape, e.g. --input-shape 3,32,32.")
        return module_workload(args.factory, _shape(args.input_shape)), batch
    if args.model_config:
        return lm_workload(file_config(args.model_config), seq_len, Path(args.model_config).stem), batch
    name = args.preset or "small"
    if name in IMAGE_PRESETS:
        batch = args.batch_size or 128
    return preset_workload(name, seq_len, args.vocab_size or recipe.get("vocab_size", 2048)), batch


def run(args: argparse.Namespace) -> int:
    """Run ``memopt memory``; print the table (and JSON)."""
    from memopt.harness.train.optimizers import parse_assignments

    workload, batch = workload_from_args(args)
    techniques = Techniques(
        microbatches=args.microbatches,
        checkpointing=args.activation_checkpointing,
        precision=args.precision,
        sparsity=args.sparsity,
        sparse_storage=args.sparse_storage,
    )
    techniques.validate(batch)
    hparams = parse_assignments(args.opt).get(None, {})
    kwargs = dict(
        optimizer=args.optimizer,
        hparams=hparams,
        batch_size=batch,
        device=args.device,
        fake=args.mode == "estimate",
        steps=args.steps,
        seed=args.seed,
    )
    breakdown = profile(workload, techniques=techniques, snapshot=args.snapshot, **kwargs)
    savings = {} if args.no_savings else technique_savings(workload, breakdown, techniques, **kwargs)
    config = breakdown.config
    print(
        f"memopt memory ({breakdown.mode}, {breakdown.device}): {workload.name}, {config['num_params']:,} parameters; "
        f"{args.optimizer}; batch {batch} in {techniques.microbatches} microbatch(es); {techniques.label()}; "
        f"{breakdown.seconds:.1f} s"
    )
    print(format_breakdown(breakdown, savings))
    offloaded = None
    if args.offload:
        sizes = parameter_state_bytes(workload, techniques, args.optimizer, breakdown.config["hparams"], args.device)
        offloaded = plan_offload(breakdown, args.offload, sizes)
        print(format_offload(offloaded))
    if args.json:
        payload = {**breakdown.to_dict(), "savings": savings}
        if offloaded is not None:
            payload["offload"] = offloaded.to_dict()
        text = json.dumps(payload, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"wrote {args.json}", file=sys.stderr)
    return 0
