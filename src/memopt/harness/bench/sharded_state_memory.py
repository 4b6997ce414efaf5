"""Optimizer-state memory per rank under FSDP2: every registry optimizer on LLaMA parameter shapes,
sharded over the processes of a ``torchrun`` launch (gloo, CPU), after one step.

The model is built for real (float32, untied head), sharded with ``fully_shard`` per decoder layer and
once more for the rest, and each optimizer takes two steps from seeded random gradients (so projector
bases and 8-bit block maxima exist); ``memopt.state_bytes_per_rank`` then counts each rank's state, and
:class:`memopt.harness.bench.collectives.CollectiveBytes` the collectives each step issued (the first step builds
the Subspace-Momentum projectors, the second is an ordinary step). Rank 0 also runs every optimizer on an
unsharded copy, for the single-process column. Hyperparameters are the registry's recommended ones (what
``memopt train`` uses) with ``--rank``. The output is a Markdown table.

    torchrun --nproc_per_node 2 -m memopt.harness.bench.sharded_state_memory --model 60m --rank 128
"""

from __future__ import annotations

import argparse
import datetime

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from memopt.harness.bench.collectives import CollectiveBytes
from memopt.harness.bench.state_memory import LLAMA_PRESETS
from memopt.harness.train.distributed import transformer_blocks
from memopt.registry.specs import accepted_hparams, build_optimizer, list_optimizers, recommended_hparams
from memopt.state import sharding
from memopt.state.accounting import state_bytes, state_bytes_per_rank


def step_twice(model: torch.nn.Module, name: str, hparams: dict) -> tuple[torch.optim.Optimizer, list]:
    """Build ``name`` for ``model`` and take two steps from seeded random gradients; return the optimizer
    and the collectives of each step (the first builds projectors, the second is an ordinary step)."""
    optimizer = build_optimizer(model, name, **hparams)
    generator = torch.Generator().manual_seed(1)

    def gradients() -> float:
        for p in model.parameters():
            spec = sharding.spec_of(p)  # this rank's piece of a random gradient, as FSDP2's backward gives it
            piece = torch.randn(sharding.local(p).shape, generator=generator) * 1e-3
            p.grad = spec.wrap(piece, p.shape, sharded=True)
        return 0.0

    steps = []
    for _ in range(2):
        gradients()
        with CollectiveBytes() as comm:
            optimizer.step(gradients if getattr(optimizer, "needs_closure", False) else None)
        steps.append(comm)
    for p in model.parameters():
        p.grad = None
    return optimizer, steps


def _mib(n: float) -> str:
    return f"{n / 2**20:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(LLAMA_PRESETS), default="60m")
    parser.add_argument("--rank", type=int, default=128, help="Subspace-Momentum rank (default 128)")
    parser.add_argument("--optimizers", nargs="+", default=list(list_optimizers()))
    args = parser.parse_args(argv)
    from transformers import LlamaConfig, LlamaForCausalLM

    dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=60))
    config = LlamaConfig(**LLAMA_PRESETS[args.model], vocab_size=32000, tie_word_embeddings=False)
    # the settings memopt train uses: the registry's recommended ones (e.g. per-coordinate META-STORM)
    hparams = {name: recommended_hparams(name) for name in args.optimizers}
    for name in args.optimizers:
        if "rank" in accepted_hparams(name):
            hparams[name]["rank"] = args.rank
    torch.manual_seed(0)
    whole_model = LlamaForCausalLM(config) if dist.get_rank() == 0 else None
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    for block in transformer_blocks(model):
        fully_shard(block)
    fully_shard(model)
    world = dist.get_world_size()
    rows = []
    for name in args.optimizers:
        whole = None
        if whole_model is not None:  # the same optimizer in one process, for comparison
            optimizer, _ = step_twice(whole_model, name, hparams[name])
            whole = state_bytes(optimizer)
            del optimizer
        dist.barrier()
        optimizer, (first, second) = step_twice(model, name, hparams[name])
        per_rank = state_bytes_per_rank(optimizer)
        del optimizer
        if whole is not None:
            share = f"{100 * max(per_rank) / whole:.1f}%"
            cells = [name, _mib(whole), *map(_mib, per_rank), _mib(sum(per_rank)), share]
            for comm in (first, second):
                cells += [str(comm.total_count), f"{comm.total_bytes / 1e6:.3f}"]
            rows.append(cells)
    if dist.get_rank() == 0:
        n = sum(p.numel() for p in whole_model.parameters())
        head = ["optimizer", "1 process MiB", *(f"rank {r} MiB" for r in range(world)), "total MiB"]
        head += ["max rank / 1 process", "step 1 collectives", "step 1 MB", "step 2 collectives", "step 2 MB"]
        print(
            f"LLaMA-{args.model} shapes ({n:,} parameters, float32, untied head), FSDP2 over {world} processes, "
            f"Subspace-Momentum rank {args.rank}; optimizer state after 2 steps (memopt.state_bytes_per_rank), "
            "and the collectives each optimizer step issued with the bytes rank 0 put into them"
        )
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for cells in rows:
            print("| " + " | ".join(cells) + " |")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
