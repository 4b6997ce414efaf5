"""State bytes of Muon, GaLore, Adam-mini, APOLLO and APOLLO-Mini on the LLaMA-60M shapes: a count written
out from the model's dimensions, against what the optimizers declare (``template_bytes``) and hold after a
step (``state_bytes``), on the meta device (nothing allocated).

``PYTHONPATH=src python -m tests.optim.peer_state_bytes`` prints the table of docs/benchmarks.md;
``tests/optim/test_peer_state_bytes.py`` holds the three counts equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import memopt
from memopt.state.accounting import template_bytes

#: LLaMA-60M (the harness's ``60m`` preset): hidden, MLP width, layers, heads, vocabulary; untied head
H, F, LAYERS, HEADS, VOCAB = 512, 1376, 8, 8, 32000
RANK = 128  # GaLore's rank for 60M (its benchmark script); APOLLO at the same rank, APOLLO-Mini at 1
#: registry name -> build_optimizer hyperparameters
PEERS: dict[str, dict] = {
    "adamw": {},
    "muon": {},
    "galore": {"rank": RANK},
    "adam_mini": {},
    "apollo": {"rank": RANK},
    "apollo_mini": {},
}
STEP = 8  # the step counter, a Python int
FLOAT = 4


def llama_60m() -> LlamaForCausalLM:
    """LLaMA-60M on the meta device (shapes and dtypes, no storage)."""
    config = LlamaConfig(
        hidden_size=H, intermediate_size=F, num_hidden_layers=LAYERS, num_attention_heads=HEADS, vocab_size=VOCAB,
        tie_word_embeddings=False,
    )  # fmt: skip
    with torch.device("meta"):
        return LlamaForCausalLM(config)


#: per layer: the four attention matrices (H x H), gate and up (F x H, tall), down (H x F, wide)
ATTENTION, TALL_MLP, WIDE_MLP = [(H, H)] * 4, [(F, H)] * 2, [(H, F)]
HIDDEN = (ATTENTION + TALL_MLP + WIDE_MLP) * LAYERS
#: embeddings, output head, norms (two per layer and the final one)
MATRICES_REST = [(VOCAB, H), (VOCAB, H)]
NORMS = [(H,)] * (2 * LAYERS + 1)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _adamw(shapes: list[tuple[int, ...]]) -> int:
    """Two float32 moments and a step per tensor."""
    return sum(2 * FLOAT * _numel(s) + STEP for s in shapes)


def _projected(shapes: list[tuple[int, ...]], rank: int) -> int:
    """Elements of the projection ``long x r`` of each matrix."""
    return sum(max(s) * min(rank, min(s)) for s in shapes)


def analytic_bytes(name: str) -> int:
    """The state bytes of ``name`` on LLaMA-60M, counted from the dimensions above."""
    rest = _adamw(MATRICES_REST + NORMS)
    if name == "adamw":
        return _adamw(HIDDEN) + rest
    if name == "muon":  # one float32 momentum per hidden matrix
        return sum(FLOAT * _numel(s) + STEP for s in HIDDEN) + rest
    if name == "galore":  # projected moments, the r x short basis, the layout string ("right"/"left")
        layouts = sum(len("right" if s[0] >= s[1] else "left") for s in HIDDEN)
        bases = sum(FLOAT * RANK * min(s) for s in HIDDEN)
        return 2 * FLOAT * _projected(HIDDEN, RANK) + bases + layouts + STEP * len(HIDDEN) + rest
    if name in ("apollo", "apollo_mini"):  # projected moments, the redraw step, the limiter's last norm
        rank = RANK if name == "apollo" else 1
        return 2 * FLOAT * _projected(HIDDEN, rank) + (STEP + STEP + FLOAT) * len(HIDDEN) + rest
    if name == "adam_mini":  # Adam's momentum; one float32 per head (q, k), row (v, o, MLP, embeddings, head), norm
        momentum = sum(FLOAT * _numel(s) + STEP for s in HIDDEN + MATRICES_REST + NORMS)
        per_layer = 2 * HEADS + 2 * H + 2 * F + H
        return momentum + FLOAT * (LAYERS * per_layer + 2 * VOCAB + len(NORMS))
    raise ValueError(f"no analytic count for {name!r}")


@dataclass(frozen=True)
class Row:
    name: str
    analytic: int
    template: int
    measured: int
    percent_of_adamw: float


def rows() -> list[Row]:
    """Analytic, template and measured bytes of every optimizer in :data:`PEERS` on LLaMA-60M."""
    model = llama_60m()
    measured = {r.name: r.bytes for r in memopt.state_memory_report(model, list(PEERS), PEERS)}
    out = []
    for name, hparams in PEERS.items():
        template = template_bytes(memopt.build_optimizer(model, name, **hparams))
        percent = 100.0 * measured[name] / measured["adamw"]
        out.append(Row(name, analytic_bytes(name), template, measured[name], percent))
    return out


def main() -> None:
    print("| optimizer | analytic bytes | template_bytes | state_bytes | MiB | % of AdamW |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows():
        print(f"| `{r.name}` | {r.analytic:,} | {r.template:,} | {r.measured:,} | {r.measured / 2**20:.2f} "
              f"| {r.percent_of_adamw:.1f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
