"""The registry's recommended settings of the accelerated methods on a tiny LLaMA, with the harness contract.

Not a benchmark (the training harness and ``memopt compare`` are for that): a check that each accelerated
registry name, built by ``memopt.build_optimizer`` with ``recommended_hparams``, trains a LLaMA-style model
through the closure contract the harness uses (``needs_closure`` -> ``optimizer.step(closure)``), with
AdamW at its recommended settings for reference. Model: ``transformers.LlamaForCausalLM`` with hidden size
64, 2 layers, 4 heads, vocabulary 128. Data: sequences of 32 tokens from a fixed random first-order Markov
chain (its entropy is the loss floor), batch 16, a fresh batch per step, 200 steps, one seed.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from memopt.harness.experiments.common import Options, Study, StudyResult, figure, step_with
from memopt.registry.specs import build_optimizer, recommended_hparams
from memopt.state.accounting import state_bytes

VOCAB, LENGTH, BATCH = 128, 32, 16
NAMES = ["adamw", "nag_gs", "meta_storm", "storm_plus", "quasar_agd", "nesterov_agd", "asgd"]


def markov_chain(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(VOCAB, VOCAB, generator=generator), dim=1)


def batches(transition: torch.Tensor, count: int, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.zeros(BATCH, LENGTH, dtype=torch.long)
        x[:, 0] = torch.randint(0, VOCAB, (BATCH,), generator=generator)
        for t in range(1, LENGTH):
            x[:, t] = torch.multinomial(transition[x[:, t - 1]], 1, generator=generator).squeeze(1)
        out.append(x)
    return out


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        use_cache=False,
    )
    return LlamaForCausalLM(config)


def train(name: str, data: list[torch.Tensor]) -> dict:
    model = tiny_llama()
    optimizer = build_optimizer(model, name, **recommended_hparams(name))
    losses, evaluations = [], 0
    start = time.perf_counter()
    for tokens in data:

        def closure(tokens=tokens):
            nonlocal evaluations
            evaluations += 1
            optimizer.zero_grad()
            loss = model(input_ids=tokens, labels=tokens).loss
            loss.backward()
            return loss

        loss = step_with(optimizer, closure)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    row = {
        "losses": losses,
        "first10": statistics.mean(losses[:10]),
        "last20": statistics.mean(losses[-20:]),
        "evaluations_per_step": evaluations / len(data),
        "seconds_per_step": seconds / len(data),
        "recommended": recommended_hparams(name),
        "state_bytes": state_bytes(optimizer),
    }
    if name == "meta_storm":
        a_values = torch.cat([s["a"].flatten() for s in optimizer.state.values()])
        row["momentum_weight_a"] = {"min": float(a_values.min()), "mean": float(a_values.mean())}
    return row


def run(options: Options) -> StudyResult:
    steps = 30 if options.quick else 200
    transition = markov_chain()
    floor = float(-(transition * transition.log()).sum(dim=1).mean())
    data = batches(transition, steps)
    names = NAMES[:3] if options.quick else NAMES
    rows = {name: train(name, data) for name in names}
    fig, (ax,) = figure(1, width=6.5)
    for name, row in rows.items():
        ax.plot(row["losses"], label=name, alpha=0.8)
    ax.axhline(floor, ls=":", c="gray", label="entropy floor")
    ax.set(xlabel="step", ylabel="training loss (fresh batch)", title="tiny LLaMA on a Markov chain")
    ax.legend(fontsize=7)
    lines = [
        f"tiny LLaMA (hidden 64, 2 layers), vocabulary {VOCAB}, Markov chain entropy {floor:.3f} nats "
        f"(uniform {math.log(VOCAB):.3f}); batch {BATCH}x{LENGTH}; {steps} steps; recommended settings"
    ]
    for name, row in rows.items():
        extra = ""
        if "momentum_weight_a" in row:
            a = row["momentum_weight_a"]
            extra = f"; META-STORM momentum weight a: min {a['min']:.6f}, mean {a['mean']:.6f}"
        lines.append(
            f"{name} {row['recommended']}: loss {row['first10']:.3f} -> {row['last20']:.3f} "
            f"(first 10 / last 20 steps), {row['evaluations_per_step']:.2f} closure evaluations per step, "
            f"{1000 * row['seconds_per_step']:.1f} ms/step, state {row['state_bytes']} bytes{extra}"
        )
    return StudyResult({"entropy_floor": floor, "steps": steps, "rows": rows}, fig, lines)


STUDY = Study("tiny_lm", "recommended settings of the accelerated registry names on a tiny LLaMA", run)
