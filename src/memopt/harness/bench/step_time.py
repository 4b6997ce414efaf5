"""Optimizer step time on a model's parameter shapes, as ratios to ``torch.optim.AdamW(fused=True)``.

Every optimizer runs in the same process on the same parameters and gradients; rounds are interleaved
(each round times every optimizer once) so that drift of the machine affects all alike, and the median
over rounds is reported. Subspace-Momentum rebuilds its projector every ``update_proj_gap`` steps: the
regular step and the rebuild step are timed separately and combined into an amortized figure.

    python -m memopt.harness.bench.step_time --threads 2 --rounds 7
    python -m memopt.harness.bench.step_time --device cuda --shapes 60m,1b --rounds 5

On a GPU (``--device cuda``) the rows are torch's fused AdamW, memopt's compressed optimizers (their Triton
kernels, :mod:`memopt.kernels.triton_steps`, and the 8-bit torch path for comparison) and the installed
8-bit peers (bitsandbytes, torchao). A candidate that cannot be built or stepped on the device (a peer
without a kernel for it) is skipped with the reason printed.
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

from memopt.harness.bench.state_memory import LLAMA_PRESETS
from memopt.registry.specs import build_optimizer
from memopt.state.accounting import state_bytes

LLAMA_60M = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8, vocab_size=32000)
#: the model shapes ``--shapes`` names (the LLaMA presets of the Subset-Norm and GaLore papers)
SHAPES = {name: {**config, "vocab_size": 32000} for name, config in LLAMA_PRESETS.items()}


@dataclass
class StepTiming:
    name: str
    median_ms: float
    ratio_to_baseline: float
    refresh_ms: float | None = None
    amortized_ms: float | None = None
    amortized_ratio: float | None = None
    state_mib: float = 0.0


def llama_shapes_model(config: dict | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """A LLaMA model (``transformers``, untied head) whose parameters have the given config's shapes, built
    on ``device`` (a 1B model is initialized there, not on the host)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device(device):
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
    skipped: dict[str, str] | None = None,
) -> list[StepTiming]:
    """Median step time of each candidate (the first is the baseline) over interleaved rounds. A candidate
    other than the baseline that raises while it is built or warmed up is left out, its reason written in
    ``skipped`` (name -> message) when given, else raised."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator, device=device) * 1e-3
    optimizers = {}
    for i, (name, make) in enumerate(candidates.items()):
        try:
            optimizer = make(model)
            optimizer.step()  # warm-up: lazy state, projector build, allocator, compilation
            optimizer.step()
        except Exception as error:  # a peer without a kernel for this device, or out of memory
            if i == 0 or skipped is None:
                raise
            skipped[name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        optimizers[name] = optimizer
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


# ------------------------------------------------------------------------------------- GPU rows
def gpu_candidates(rank: int = 128) -> dict[str, Callable[[nn.Module], torch.optim.Optimizer]]:
    """The GPU comparison: torch's fused AdamW (the baseline), memopt's Subset-Norm, Subspace-Momentum and
    8-bit optimizers (Triton kernels where :mod:`memopt.optim.dispatch` has them), the 8-bit torch path for
    comparison, and the installed 8-bit peers; few enough float32 states that LLaMA-1B fits an 80 GB card.
    Subspace-Momentum builds its bases with the randomized range finder: an exact SVD of LLaMA-1B's 169
    matrices takes minutes per rebuild on one GPU, and the regular step, timed here, does not depend on it."""
    eight_bit = eight_bit_candidates()
    snsm = dict(lr=1e-2, rank=rank, proj_type="randomized")
    candidates: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
        "torch AdamW fused": default_candidates(rank)["torch AdamW fused"],
        "memopt adamw_sn": lambda m: build_optimizer(m, "adamw_sn", lr=1e-2),
        "memopt adamw_snsm randomized": lambda m: build_optimizer(m, "adamw_snsm", **snsm),
        "memopt adamw8bit": eight_bit["memopt adamw8bit"],
        "memopt adamw8bit torch path": eight_bit["memopt adamw8bit torch path"],
        "memopt adamw_snsm8bit randomized": lambda m: build_optimizer(m, "adamw_snsm8bit", **snsm),
    }
    candidates.update({name: make for name, make in eight_bit.items() if not name.startswith("memopt")})
    return candidates


# ------------------------------------------------------------------------------------- end of GPU rows


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
    parser.add_argument(
        "--shapes",
        default="60m",
        help=f"comma-separated LLaMA shapes to time, each a separate model ({', '.join(SHAPES)}; default 60m)",
    )
    args = parser.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        raise SystemExit(
            f"--shapes {args.shapes!r}: unknown shape {unknown or shapes}; choose from {', '.join(SHAPES)}."
        )
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch build sees no CUDA device; use --device cpu.")
    where = (
        torch.cuda.get_device_name(args.device)
        if cuda
        else (f"{args.threads} threads; {platform.processor() or platform.machine()}")
    )
    report: dict[str, dict] = {}
    for shape in shapes:
        candidates = gpu_candidates(args.rank) if cuda else {**default_candidates(args.rank), **eight_bit_candidates()}
        if args.only:
            baseline = next(iter(candidates))
            candidates = {k: v for k, v in candidates.items() if k == baseline or any(o in k for o in args.only)}
        model = llama_shapes_model(SHAPES[shape], args.device)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"LLaMA-{shape.upper()} shapes: {n_params:,} parameters, float32; torch {torch.__version__}; {where}")
        skipped: dict[str, str] = {}
        results = benchmark(
            model, candidates, rounds=args.rounds, steps_per_round=args.steps_per_round, skipped=skipped
        )
        print(format_table(results))
        for name, reason in skipped.items():
            print(f"skipped {name}: {reason}")
        report[shape] = {"parameters": n_params, "results": [asdict(r) for r in results], "skipped": skipped}
        del model, results
        if cuda:
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "torch": torch.__version__, "shapes": report}, f, indent=2)


if __name__ == "__main__":
    main()
