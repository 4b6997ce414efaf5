"""Step time of ``torch.compile(optimizer.step)`` against the eager step, on CPU, for registry optimizers.

Each optimizer gets two identical copies of one MLP (``--layers`` square ``nn.Linear`` layers of ``--width``)
and fixed random gradients; one copy steps eagerly, the other through ``torch.compile(optimizer.step)``
(inductor, default mode). The first ``--warmup`` compiled steps (compilation, and the recompilation once the
step counter changes) are timed apart and left out. Then ``--rounds`` rounds alternate ``--steps`` eager and
``--steps`` compiled steps; the figure is the median time of one step over all rounds, in wall-clock and in
process CPU time. The two copies' parameters are compared at the end (the compiled step must give the eager
result within float32 rounding). Usage::

    PYTHONPATH=src python scripts/bench_compile_step.py --optimizers adamw_sn adamw8bit --threads 1
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
import warnings

import torch
from torch import nn

from memopt.registry.specs import build_optimizer


def _model(width: int, layers: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


def _timed(step, grads: list[torch.Tensor], params: list[torch.Tensor]) -> tuple[float, float]:
    for p, g in zip(params, grads):
        p.grad = g
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(name: str, args: argparse.Namespace) -> dict[str, float]:
    eager_model = _model(args.width, args.layers)
    compiled_model = copy.deepcopy(eager_model)
    eager = build_optimizer(eager_model, name, lr=1e-3)
    compiled = build_optimizer(compiled_model, name, lr=1e-3)
    compiled_step = torch.compile(compiled.step)
    generator = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=generator) * 1e-2 for p in eager_model.parameters()]
    eager_params, compiled_params = list(eager_model.parameters()), list(compiled_model.parameters())
    warmup = 0.0
    for _ in range(args.warmup):
        _timed(eager.step, grads, eager_params)
        warmup += _timed(compiled_step, grads, compiled_params)[0]
    times: dict[str, list[tuple[float, float]]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        times["eager"] += [_timed(eager.step, grads, eager_params) for _ in range(args.steps)]
        times["compiled"] += [_timed(compiled_step, grads, compiled_params) for _ in range(args.steps)]
    diff = max((a - b).abs().max().item() for a, b in zip(eager_params, compiled_params))
    result = {"warmup_s": warmup, "max_abs_diff": diff}
    for kind, samples in times.items():
        result[f"{kind}_ms"] = 1e3 * statistics.median(s[0] for s in samples)
        result[f"{kind}_cpu_ms"] = 1e3 * statistics.median(s[1] for s in samples)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizers", nargs="+", default=["adamw_sn", "adamw8bit"])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
    n = sum(p.numel() for p in _model(args.width, args.layers).parameters())
    print(
        f"MLP {args.layers} x nn.Linear({args.width}, {args.width}): {n:,} float32 parameters; torch "
        f"{torch.__version__}; {args.threads} thread(s); {platform.machine()}"
    )
    print(f"{'optimizer':<16}{'eager ms':>10}{'compiled ms':>13}{'x eager':>9}{'eager cpu ms':>14}"
          f"{'compiled cpu ms':>17}{'warm-up s':>11}{'max |diff|':>12}")  # fmt: skip
    for name in args.optimizers:
        r = bench(name, args)
        print(
            f"{name:<16}{r['eager_ms']:>10.2f}{r['compiled_ms']:>13.2f}{r['compiled_ms'] / r['eager_ms']:>9.2f}"
            f"{r['eager_cpu_ms']:>14.2f}{r['compiled_cpu_ms']:>17.2f}{r['warmup_s']:>11.1f}{r['max_abs_diff']:>12.2e}"
        )


if __name__ == "__main__":
    main()
