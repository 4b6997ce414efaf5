"""Optimizer-state memory of registry optimizers on LLaMA parameter shapes, measured without allocating.

The model is built on the meta device and each optimizer takes one step there, so every state tensor
(projector bases and indices included) exists with its real shape and dtype but holds no memory;
``memopt.state_bytes`` then counts them exactly. Tests check that meta and real tensors give equal counts.

    python -m memopt.harness.bench.state_memory --rank 128
"""

from __future__ import annotations

import argparse

import torch

from memopt.registry.reports import format_state_report, state_memory_report
from memopt.registry.specs import list_optimizers

LLAMA_PRESETS = {
    "60m": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8),
    "130m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12),
    "350m": dict(hidden_size=1024, intermediate_size=2736, num_hidden_layers=24, num_attention_heads=16),
    "1b": dict(hidden_size=2048, intermediate_size=5461, num_hidden_layers=24, num_attention_heads=32),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(LLAMA_PRESETS), default="60m")
    parser.add_argument("--rank", type=int, default=128, help="Subspace-Momentum rank (default 128)")
    parser.add_argument("--optimizers", nargs="+", default=[n for n in list_optimizers() if n != "adamw"])
    args = parser.parse_args(argv)
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**LLAMA_PRESETS[args.model], vocab_size=32000, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    hparams = {name: {"rank": args.rank} for name in args.optimizers if "snsm" in name}
    rows = state_memory_report(model, args.optimizers, hparams)
    print(f"LLaMA-{args.model} parameter shapes ({n_params:,} parameters, float32, untied head); rank {args.rank}")
    print(format_state_report(rows))


if __name__ == "__main__":
    main()
