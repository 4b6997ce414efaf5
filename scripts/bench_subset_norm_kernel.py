"""Subset-Norm step time through the C kernel against the foreach path and torch's fused AdamW, on CPU.

LLaMA-60M parameter shapes (``memopt.harness.bench.step_time``), fixed random gradients. Three optimizers
in one process, each with its own copy of the model: ``torch.optim.AdamW(fused=True)``, ``adamw_sn``
(whose Subset-Norm group runs on the kernel) and ``adamw_sn`` with the kernel left out of the dispatch
registry for its steps (the foreach path it replaces). ``--rounds`` interleaved rounds of ``--steps`` steps
each; the figures are the medians of one step's wall-clock and process CPU time, and their ratios to the
fused AdamW step. On a machine shared with other jobs the CPU times are the figures to compare. Usage::

    PYTHONPATH=src python scripts/bench_subset_norm_kernel.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
import time

import torch

from memopt.harness.bench.step_time import llama_shapes_model
from memopt.optim import dispatch
from memopt.registry.specs import build_optimizer


@contextlib.contextmanager
def _without(name: str):
    """The dispatch registry without the implementation ``name`` (restored on exit)."""
    saved = list(dispatch.IMPLEMENTATIONS)
    dispatch.IMPLEMENTATIONS[:] = [i for i in saved if i.name != name]
    try:
        yield
    finally:
        dispatch.IMPLEMENTATIONS[:] = saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = llama_shapes_model()
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator) * 1e-3 for p in base.parameters()]
    makers = {
        "torch AdamW fused": (lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True), None),
        "memopt adamw_sn (kernel)": (lambda m: build_optimizer(m, "adamw_sn", lr=1e-2), None),
        "memopt adamw_sn (foreach)": (lambda m: build_optimizer(m, "adamw_sn", lr=1e-2), "subset_norm_kernel"),
    }
    runs = {}
    for name, (make, left_out) in makers.items():
        model = copy.deepcopy(base)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        runs[name] = (make(model), left_out)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}

    def step(name: str) -> tuple[float, float]:
        optimizer, left_out = runs[name]
        with _without(left_out) if left_out else contextlib.nullcontext():
            wall, cpu = time.perf_counter(), time.process_time()
            optimizer.step()
            return time.perf_counter() - wall, time.process_time() - cpu

    for name in runs:  # warm-up: lazy state
        step(name), step(name)
    for _ in range(args.rounds):
        for name in runs:
            times[name] += [step(name) for _ in range(args.steps)]
    n = sum(p.numel() for p in base.parameters())
    print(f"LLaMA-60M shapes: {n:,} float32 parameters; torch {torch.__version__}; {args.threads} thread(s); "
          f"{platform.machine()}; {args.rounds} rounds of {args.steps} steps")  # fmt: skip
    print(f"{'optimizer':<28}{'wall ms':>9}{'x fused':>9}{'cpu ms':>9}{'x fused':>9}")
    medians = {name: [statistics.median(t[i] for t in ts) * 1e3 for i in (0, 1)] for name, ts in times.items()}
    wall0, cpu0 = medians["torch AdamW fused"]
    for name, (wall, cpu) in medians.items():
        print(f"{name:<28}{wall:>9.1f}{wall / wall0:>9.2f}{cpu:>9.1f}{cpu / cpu0:>9.2f}")


if __name__ == "__main__":
    main()
