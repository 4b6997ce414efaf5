"""Optimizer step time on a model's parameter shapes, as ratios to ``torch.optim.AdamW(fused=True)``.

Every optimizer runs in the same process on the same parameters and gradients; rounds are interleaved
(each round times every optimizer once) so that drift of the machine affects all alike, and the median
over rounds is reported. Subspace-Momentum rebuilds its projector every ``update_proj_gap`` steps: the
regular step and the rebuild step are timed separately and combined into an amortized figure.

    python -m memopt.harness.bench.step_time --threads 2 --rounds 7
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from memopt.registry.specs import build_optimizer
from memopt.state.accounting import state_bytes

LLAMA_60M = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8, vocab_size=32000)


@dataclass
class StepTiming:
    name: str
    median_ms: float
    ratio_to_baseline: float
    refresh_ms: float | None = None
    amortized_ms: float | None = None
    amortized_ratio: float | None = None
    state_mib: float = 0.0


def llama_shapes_model(config: dict | None = None) -> nn.Module:
    """A LLaMA model (``transformers``, untied head) whose parameters have the given config's shapes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**(config or LLAMA_60M), tie_word_embeddings=False))


def _synchronize(optimizer: torch.optim.Optimizer) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously)."""
    device = optimizer.param_groups[0]["params"][0].device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(optimizer: torch.optim.Optimizer, steps: int) -> float:
    _synchronize(optimizer)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    _synchronize(optimizer)
    return (time.perf_counter() - start) / steps * 1e3


def benchmark(
    model: nn.Module,
    candidates: dict[str, Callable[[nn.Module], torch.optim.Optimizer]],
    *,
    rounds: int = 7,
    steps_per_round: int = 3,
    proj_gap: int | None = None,
) -> list[StepTiming]:
    """Median step time of each candidate (the first is the baseline) over interleaved rounds."""
    generator = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=generator) * 1e-3).to(p.device)
    optimizers = {name: make(model) for name, make in candidates.items()}
    for optimizer in optimizers.values():  # warm-up: lazy state, projector build, allocator
        optimizer.step()
        optimizer.step()
    samples: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(rounds):
        for name, optimizer in optimizers.items():
            samples[name].append(_time_steps(optimizer, steps_per_round))
    refresh: dict[str, float] = {}
    for name, optimizer in optimizers.items():
        if any(g.get("rank") for g in optimizer.param_groups):
            refresh[name] = statistics.median(_time_refresh(optimizer) for _ in range(3))
    baseline = statistics.median(samples[next(iter(optimizers))])
    results = []
    for name, optimizer in optimizers.items():
        median = statistics.median(samples[name])
        timing = StepTiming(name, median, median / baseline, state_mib=state_bytes(optimizer) / 2**20)
        if name in refresh:
            gap = proj_gap or optimizer.param_groups[0]["update_proj_gap"]
            timing.refresh_ms = refresh[name]
            timing.amortized_ms = ((gap - 1) * median + refresh[name]) / gap
            timing.amortized_ratio = timing.amortized_ms / baseline
        results.append(timing)
    return results


def _time_refresh(optimizer: torch.optim.Optimizer) -> float:
    """Time one step at which every Subspace-Momentum projector is rebuilt."""
    for group in optimizer.param_groups:
        if group.get("rank"):
            for p in group["params"]:
                state = optimizer.state[p]
                gap = group["update_proj_gap"]
                state["step"] = (state["step"] // gap + 1) * gap - 1  # the next step is a rebuild step
    return _time_steps(optimizer, 1)


def default_candidates(rank: int = 128) -> dict[str, Callable[[nn.Module], torch.optim.Optimizer]]:
    return {
        "torch AdamW fused": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0, fused=True),
        "torch AdamW foreach": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0, foreach=True),
        "memopt adamw": lambda m: build_optimizer(m, "adamw", lr=1e-3, weight_decay=0.0),
        "memopt adamw_sn": lambda m: build_optimizer(m, "adamw_sn", lr=1e-2),
        "memopt adamw_snsm": lambda m: build_optimizer(m, "adamw_snsm", lr=1e-2, rank=rank, proj_type="svd"),
        "memopt adamw_snsm randomized": lambda m: build_optimizer(
            m, "adamw_snsm", lr=1e-2, rank=rank, proj_type="randomized"
        ),
    }


def eight_bit_candidates() -> dict[str, Callable[[nn.Module], torch.optim.Optimizer]]:
    """memopt's 8-bit AdamW, AdamW-SN with 8-bit momentum (the engine's generic 8-bit load and store), and
    the 8-bit peers that are installed (bitsandbytes, torchao), all with block size 256 and no weight decay,
    as the float32 baseline."""
    candidates: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
        "memopt adamw8bit": lambda m: build_optimizer(m, "adamw8bit", lr=1e-3, weight_decay=0.0),
        "memopt adamw8bit torch path": lambda m: build_optimizer(
            m, "adamw8bit", lr=1e-3, weight_decay=0.0, foreach=False
        ),
        "memopt adamw_sn 8bit": lambda m: build_optimizer(m, "adamw_sn", lr=1e-2, state_storage="8bit"),
    }
    if importlib.util.find_spec("bitsandbytes") is not None:
        import bitsandbytes

        candidates["bitsandbytes AdamW8bit"] = lambda m: bitsandbytes.optim.AdamW8bit(
            m.parameters(), lr=1e-3, weight_decay=0.0
        )
    if importlib.util.find_spec("torchao") is not None:
        from torchao.optim import AdamW8bit as TorchaoAdamW8bit

        candidates["torchao AdamW8bit"] = lambda m: TorchaoAdamW8bit(m.parameters(), lr=1e-3, weight_decay=0.0)
    return candidates


def format_table(results: list[StepTiming]) -> str:
    lines = [
        f"{'optimizer':<30}{'step ms':>9}{'x fused':>9}{'rebuild ms':>12}{'amortized ms':>14}{'x fused':>9}"
        f"{'state MiB':>11}"
    ]
    for r in results:
        extra = (
            f"{r.refresh_ms:>12.1f}{r.amortized_ms:>14.1f}{r.amortized_ratio:>9.2f}"
            if r.refresh_ms is not None
            else f"{'':>12}{'':>14}{'':>9}"
        )
        lines.append(f"{r.name:<30}{r.median_ms:>9.1f}{r.ratio_to_baseline:>9.2f}{extra}{r.state_mib:>11.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--rank", type=int, default=128, help="Subspace-Momentum rank (default 128)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--device", default="cpu", help="where the parameters live: cpu (default) or cuda")
    parser.add_argument(
        "--only", nargs="+", help="time only candidates whose name contains one of these (the baseline always runs)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch build sees no CUDA device; use --device cpu.")
    model = llama_shapes_model().to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    where = (
        torch.cuda.get_device_name(model.device)
        if args.device.startswith("cuda")
        else (f"{args.threads} threads; {platform.processor() or platform.machine()}")
    )
    print(f"LLaMA-60M shapes: {n_params:,} parameters, float32; torch {torch.__version__}; {where}")
    candidates = {**default_candidates(args.rank), **eight_bit_candidates()}
    if args.only:
        baseline = next(iter(candidates))
        candidates = {k: v for k, v in candidates.items() if k == baseline or any(o in k for o in args.only)}
    results = benchmark(model, candidates, rounds=args.rounds, steps_per_round=args.steps_per_round)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=2)


if __name__ == "__main__":
    main()
