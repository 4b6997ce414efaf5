"""AdamW-SNSM's regular step against the same step with the textbook numerator, in one process.

The textbook form ``N_t = g + P*(M_t - P(g))`` with a fresh tensor for every intermediate (``P(g)``,
``M_t - P(g)``, ``P*(...)``, the sum) was memopt's numerator up to commit 2417eca; it is registered here as the
momentum estimator ``subspace_textbook`` and given to a second optimizer on the same LLaMA-60M shapes, so that
both run on the same parameters and gradients, in interleaved rounds (median per step), next to
``torch.optim.AdamW(fused=True)`` as in :mod:`memopt.harness.bench.step_time`; wall and process CPU time
(the figure to compare on a busy machine, with ``--threads 1``). No step here rebuilds the
projector (that cost is unchanged; step_time times it). ``--bf16`` adds the ``proj_matmul_dtype="bfloat16"``
option.

    PYTHONPATH=src python scripts/bench_snsm_step.py --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from memopt.estimators import projectors
from memopt.estimators.base import MomentumEstimator, ParamStep
from memopt.estimators.registry import register_estimator
from memopt.estimators.subspace_momentum import SubspaceMomentum, rebuilds_at
from memopt.harness.bench.step_time import llama_shapes_model
from memopt.registry.specs import build_optimizer


@register_estimator("subspace_textbook")
class TextbookSubspaceMomentum(SubspaceMomentum):
    """Subspace-Momentum with every intermediate of the numerator a new tensor (no shared buffer)."""

    numerator_many = MomentumEstimator.numerator_many

    def numerator(self, ps: ParamStep, group: dict) -> torch.Tensor:
        g = ps.grad
        momentum = ps.load("sm_exp_avg", g.dtype)
        if rebuilds_at(ps.step, group):
            self._refresh(ps, group, momentum)
        projected = projectors.down(g, ps.state, ps.shard)
        momentum.lerp_(projected, 1 - group["betas"][0])
        ps.store("sm_exp_avg", momentum)
        return g + projectors.up(momentum - projected, ps.state, tuple(g.shape), ps.shard)


def snsm(model: torch.nn.Module, momentum_type: str = "subspace", **options) -> torch.optim.Optimizer:
    optimizer = build_optimizer(model, "adamw_snsm", lr=1e-2, rank=128, proj_type="svd", **options)
    for group in optimizer.param_groups:
        if group.get("rank"):
            group["momentum_type"] = momentum_type
    return optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also time proj_matmul_dtype='bfloat16'")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = llama_shapes_model()
    generator = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator) * 1e-3
    optimizers = {
        "torch AdamW fused": torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=True),
        "adamw_snsm textbook numerator": snsm(model, "subspace_textbook"),
        "adamw_snsm": snsm(model),
    }
    if args.bf16:
        optimizers["adamw_snsm proj_matmul_dtype=bfloat16"] = snsm(model, proj_matmul_dtype="bfloat16")
    for optimizer in optimizers.values():  # lazy state and the projector build
        optimizer.step()
        optimizer.step()
    wall: dict[str, list[float]] = {name: [] for name in optimizers}
    cpu: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(args.rounds):
        for name, optimizer in optimizers.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps_per_round):
                optimizer.step()
            wall[name].append((time.perf_counter() - start) / args.steps_per_round * 1e3)
            cpu[name].append((time.process_time() - start_cpu) / args.steps_per_round * 1e3)
    base_wall, base_cpu = (statistics.median(d["torch AdamW fused"]) for d in (wall, cpu))
    print(f"LLaMA-60M shapes, torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds")
    print(f"{'optimizer':<40}{'step ms':>9}{'x fused':>9}{'cpu ms':>9}{'x fused':>9}")
    for name in optimizers:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<40}{w:>9.1f}{w / base_wall:>9.2f}{c:>9.1f}{c / base_cpu:>9.2f}")


if __name__ == "__main__":
    main()
