"""``memopt experiment NAME``: the studies that check the accelerated methods' claims.

Each study writes ``<out>/<NAME>.json`` (settings, environment, summary, every number behind the figure)
and ``<out>/<NAME>.png``, and prints its summary. Run one as ``memopt experiment NAME`` (once wired into
the CLI) or ``python -m memopt.harness.experiments NAME``; ``--quick`` runs a reduced version in seconds.
``docs/experiments.md`` records the full runs.

``add_subparser(subparsers)`` adds the ``experiment`` subcommand to an ``argparse`` sub-parser set and
``run(args) -> int`` executes it.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch

from memopt.harness.experiments.common import Options, Study, timed, write
from memopt.registry.specs import list_optimizers
from memopt.validation import closest_names_hint

DEFAULT_OUT = Path("runs") / "experiments"


def studies() -> dict[str, Study]:
    """The studies by name (imported lazily: some need matplotlib or train small models)."""
    modules = [importlib.import_module(f"{__name__}.{name}") for name in STUDY_NAMES]
    return {m.STUDY.name: m.STUDY for m in modules}


#: every study, by the name of its module here (whose ``STUDY`` has that name)
STUDY_NAMES = (
    "naggs",
    "quasar",
    "meta_storm",
    "asgd",
    "grokfast",
    "momentum",
    "tiny_lm",
    "dadao",
    "shuffle_private",
    "convex",
    "saddle",
    "poincare",
    "wildfire",
    "mri",
    "inversion",
    "tract",
    "psgd",
)


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``experiment NAME [--out DIR] [--seeds N] [--quick]`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "experiment",
        help="run a study of an accelerated method's claim (writes JSON and PNG)",
        description="Run one study; it writes OUT/NAME.json and OUT/NAME.png and prints a summary.",
    )
    parser.add_argument("name", choices=STUDY_NAMES, help="which study")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the study's own)")
    parser.add_argument("--quick", action="store_true", help="a reduced run that takes seconds (smoke test)")
    parser.add_argument(
        "--optimizers",
        type=_names,
        default=None,
        metavar="NAME,NAME",
        help="registry names to compare, for the studies that take them (tract); default: the study's own",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run the independent runs in N processes, for the studies that can (tract); same numbers (default 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: these studies run many tiny ops, which extra threads slow down)",
    )
    parser.set_defaults(func=run)
    return parser


def _names(text: str) -> tuple[str, ...]:
    """``"sgd,adamw"`` -> ``("sgd", "adamw")``."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give registry names separated by commas, e.g. sgd,adamw")
    return names


def run(args: argparse.Namespace) -> int:
    """Run the study ``args.name``; return the process exit status."""
    study = studies()[args.name]
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 3)
    if seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {seeds}.")
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}.")
    optimizers = getattr(args, "optimizers", None)
    if optimizers is not None:
        if not study.takes_optimizers:
            takers = ", ".join(name for name, s in studies().items() if s.takes_optimizers)
            raise SystemExit(f"--optimizers: the {study.name} study has a fixed set of methods; only {takers} take it.")
        unknown = [name for name in optimizers if name not in list_optimizers()]
        if unknown:
            hint = closest_names_hint(unknown[0], list_optimizers())
            raise SystemExit(f"--optimizers: unknown registry name {unknown[0]!r}.{hint} Run `memopt list`.")
    jobs = getattr(args, "jobs", 1)
    if jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {jobs}.")
    if jobs > 1 and not study.takes_jobs:
        raise SystemExit(f"--jobs {jobs}: the {study.name} study runs in one process; drop --jobs.")
    options = Options(out=Path(args.out), seeds=seeds, quick=args.quick, optimizers=optimizers, jobs=jobs)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result, seconds = timed(study, options)
        json_path, png_path = write(study, options, result, seconds)
    finally:
        torch.set_num_threads(previous_threads)
    print(f"== {study.name}: {study.help}")
    for line in result.lines:
        print(line)
    print(f"({seconds:.1f} s; wrote {json_path} and {png_path})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m memopt.harness.experiments NAME [options]``."""
    parser = argparse.ArgumentParser(prog="python -m memopt.harness.experiments")
    subparsers = parser.add_subparsers(dest="command")
    add_subparser(subparsers)
    import sys

    args = parser.parse_args(["experiment", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
