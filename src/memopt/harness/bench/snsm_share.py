"""The optimizer step's share of a full training step at the papers' LLaMA-60M recipe batch, on this CPU.

The Subset-Norm/Subspace-Momentum paper (Nguyen & Nguyen, ICML 2025, arXiv 2411.07120) trains LLaMA-60M with
512 sequences of 256 tokens per optimizer step (131,072 tokens). One such step on a CPU takes minutes, so the
forward + backward time is extrapolated from measured microbatches:

1. forward + backward (next-token cross-entropy on random tokens) of ``LlamaForCausalLM`` with the 60M shapes
   is timed at two microbatch sizes ``b_small < b_large`` (sequences of 256 tokens), median of ``rounds``
   interleaved measurements each;
2. linearity check: the time per sequence at ``b_small`` and at ``b_large`` (equal for a time linear in the
   batch without a fixed part); their relative difference is printed;
3. the recipe step accumulates gradients over ``512 / b_large`` microbatches of ``b_large`` sequences, so its
   forward + backward time is ``512 / b_large * t(b_large)``, the straight line through the origin and the
   larger measurement (it assumes nothing about batches beyond ``b_large`` except that microbatches repeat);
   the line through both measurements, ``t(b) = a + s b`` at ``b = 512``, is printed as the other reading;
4. the optimizer step is timed on the same model's parameters with
   :func:`memopt.harness.bench.step_time.benchmark` (random gradients, interleaved rounds, median; the
   Subspace-Momentum rebuild timed on its own and amortized over ``update_proj_gap`` steps);
5. share = ``optimizer / (forward + backward + optimizer)``.

    python -m memopt.harness.bench.snsm_share --threads 2 --small 2 --large 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from memopt.harness.bench.machine import LoadProbe
from memopt.harness.bench.step_time import LLAMA_60M, StepTiming, benchmark, llama_shapes_model
from memopt.registry.specs import build_optimizer

#: the papers' 60M recipe: sequences per optimizer step and tokens per sequence
RECIPE_SEQUENCES = 512
SEQUENCE_LENGTH = 256


@dataclass
class ForwardBackward:
    """Measured microbatch times and the extrapolation to the recipe batch."""

    small: int
    large: int
    small_s: float
    large_s: float
    #: relative difference of the per-sequence times at the two sizes (0 for a time linear through the origin)
    nonlinearity: float
    #: ``RECIPE_SEQUENCES / large * large_s``: accumulated microbatches of the larger size
    recipe_s: float
    #: the line through both measurements at ``RECIPE_SEQUENCES``
    recipe_two_point_s: float


@dataclass
class Share:
    name: str
    optimizer_ms: float
    share: float


def forward_backward_seconds(model: nn.Module, batch: int, rounds: int, seed: int = 0) -> list[float]:
    """Wall seconds of ``rounds`` forward + backward passes of ``batch`` random sequences."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.config.vocab_size, (batch, SEQUENCE_LENGTH), generator=generator)
    times = []
    for _ in range(rounds):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(input_ids=tokens, labels=tokens).loss.backward()
        times.append(time.perf_counter() - start)
    return times


def measure_forward_backward(model: nn.Module, small: int, large: int, rounds: int) -> ForwardBackward:
    """Median times at the two microbatch sizes (interleaved, after one warm-up pass each) and the
    extrapolations described in the module docstring."""
    if not 0 < small < large:
        raise ValueError(f"Invalid microbatch sizes: small={small}, large={large}. Need 0 < small < large.")
    if RECIPE_SEQUENCES % large:
        raise ValueError(f"Invalid large={large}: it must divide the recipe's {RECIPE_SEQUENCES} sequences.")
    for batch in (small, large):
        forward_backward_seconds(model, batch, 1)
    samples: dict[int, list[float]] = {small: [], large: []}
    for _ in range(rounds):
        for batch in (small, large):
            samples[batch] += forward_backward_seconds(model, batch, 1)
    model.zero_grad(set_to_none=True)
    t_small, t_large = statistics.median(samples[small]), statistics.median(samples[large])
    per_small, per_large = t_small / small, t_large / large
    slope = (t_large - t_small) / (large - small)
    return ForwardBackward(
        small=small,
        large=large,
        small_s=t_small,
        large_s=t_large,
        nonlinearity=(per_small - per_large) / per_large,
        recipe_s=RECIPE_SEQUENCES / large * t_large,
        recipe_two_point_s=t_small + slope * (RECIPE_SEQUENCES - small),
    )


def optimizer_candidates(rank: int = 128) -> dict[str, Callable[[nn.Module], torch.optim.Optimizer]]:
    """AdamW (torch's fused kernel, the baseline of step_time), memopt adamw, AdamW-SN and AdamW-SNSM."""
    return {
        "torch AdamW fused": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0, fused=True),
        "memopt adamw": lambda m: build_optimizer(m, "adamw", lr=1e-3, weight_decay=0.0),
        "memopt adamw_sn": lambda m: build_optimizer(m, "adamw_sn", lr=1e-2),
        "memopt adamw_snsm": lambda m: build_optimizer(m, "adamw_snsm", lr=1e-2, rank=rank, proj_type="svd"),
    }


def shares(timings: list[StepTiming], forward_backward_s: float) -> list[Share]:
    """The optimizer's share of a training step for every timing (Subspace-Momentum: regular and amortized)."""
    out = []
    total = forward_backward_s * 1e3
    for t in timings:
        out.append(Share(t.name, t.median_ms, t.median_ms / (total + t.median_ms)))
        if t.amortized_ms is not None:
            out.append(Share(f"{t.name} amortized", t.amortized_ms, t.amortized_ms / (total + t.amortized_ms)))
    return out


def format_report(fb: ForwardBackward, rows: list[Share]) -> str:
    tokens = RECIPE_SEQUENCES * SEQUENCE_LENGTH
    lines = [
        f"forward+backward, {SEQUENCE_LENGTH}-token sequences: {fb.small} seq {fb.small_s:.2f} s "
        f"({fb.small_s / fb.small * 1e3:.0f} ms/seq), {fb.large} seq {fb.large_s:.2f} s "
        f"({fb.large_s / fb.large * 1e3:.0f} ms/seq); per-sequence difference {fb.nonlinearity:+.1%}",
        f"recipe step ({RECIPE_SEQUENCES} x {SEQUENCE_LENGTH} = {tokens:,} tokens): "
        f"{RECIPE_SEQUENCES // fb.large} microbatches of {fb.large} -> {fb.recipe_s:.1f} s "
        f"(line through both sizes: {fb.recipe_two_point_s:.1f} s)",
        f"{'optimizer':<32}{'step ms':>10}{'share of training step':>24}",
    ]
    lines += [f"{r.name:<32}{r.optimizer_ms:>10.1f}{r.share:>23.3%}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--small", type=int, default=2, help="smaller microbatch, sequences (default 2)")
    parser.add_argument("--large", type=int, default=4, help="larger microbatch, sequences (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="forward+backward rounds per size (default 3)")
    parser.add_argument("--optimizer-rounds", type=int, default=5, help="optimizer timing rounds (default 5)")
    parser.add_argument("--rank", type=int, default=128, help="Subspace-Momentum rank (default 128)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = llama_shapes_model(LLAMA_60M)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"LLaMA-60M: {n_params:,} parameters, float32; torch {torch.__version__}; {args.threads} threads")
    probe = LoadProbe()
    probe.start()
    fb = measure_forward_backward(model, args.small, args.large, args.rounds)
    timings = benchmark(model, optimizer_candidates(args.rank), rounds=args.optimizer_rounds)
    load = probe.stop()
    rows = shares(timings, fb.recipe_s)
    print(format_report(fb, rows))
    pressure = "n/a" if load["cpu_pressure"] is None else f"{load['cpu_pressure']:.0%}"
    print(f"machine: CPU pressure {pressure} of the run, load average {load['load_avg']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"forward_backward": asdict(fb), "shares": [asdict(r) for r in rows], "load": load}, f, indent=2)


if __name__ == "__main__":
    main()
