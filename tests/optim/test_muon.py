"""Muon + AdamW (``memopt.build_optimizer(model, "muon")``) against ``torch.optim.Muon`` on the hidden matrices
and ``torch.optim.AdamW`` on the rest, on the same split: equal bit for bit on float32 parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import memopt
from memopt.optim.muon import Muon
from memopt.registry.partition import KINDS, output_head


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Embedding(10, 16), nn.Flatten(), nn.Linear(48, 40), nn.LayerNorm(40), nn.GELU(), nn.Linear(40, 24),
        nn.GELU(), nn.Linear(24, 5),
    )  # fmt: skip


def _train(net: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 8) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, 10, (12, 3), generator=generator)
        target = torch.randn(12, 5, generator=generator)
        optimizer.zero_grad()
        nn.functional.mse_loss(net(ids), target).backward()
        optimizer.step()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"weight_decay": 0.1, "adjust_lr_fn": "original"},
        {"nesterov": False, "momentum": 0.9, "ns_steps": 3},
    ],
    ids=["defaults", "decay,original", "heavy-ball,3-steps"],
)
def test_equals_torch_muon_on_hidden_matrices_and_torch_adamw_on_the_rest(options):
    lr, weight_decay = 0.01, options.get("weight_decay", 0.0)
    net = _net()
    optimizer = memopt.build_optimizer(net, "muon", **{"lr": lr, "weight_decay": weight_decay, **options})
    _train(net, optimizer)

    reference = _net()
    hidden = [reference[2].weight, reference[5].weight]  # the output head reference[7] goes to AdamW
    rest = [p for p in reference.parameters() if all(p is not h for h in hidden)]
    muon_options = {k: v for k, v in options.items() if k != "weight_decay"}
    muon_options.setdefault("adjust_lr_fn", "match_rms_adamw")
    torch_muon = torch.optim.Muon(hidden, lr=lr, weight_decay=weight_decay, **muon_options)
    torch_adamw = torch.optim.AdamW(rest, lr=lr, weight_decay=weight_decay, foreach=False)

    class Both:  # the pair, stepped in the order of memopt's groups
        def __init__(self):
            self.parts = (torch_muon, torch_adamw)

        def zero_grad(self):
            for part in self.parts:
                part.zero_grad()

        def step(self):
            for part in self.parts:
                part.step()

    _train(reference, Both())
    for (name, mine), theirs in zip(net.named_parameters(), reference.parameters()):
        assert torch.equal(mine, theirs), name
    for p, q in zip(hidden, (net[2].weight, net[5].weight)):
        assert torch.equal(optimizer.state[q]["momentum_buffer"], torch_muon.state[p]["momentum_buffer"])


def _llama(tied: bool) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, tie_word_embeddings=tied,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_the_llama_split_gives_muon_the_attention_and_mlp_matrices_only(tied):
    model = _llama(tied)
    assert output_head(model) is model.lm_head
    optimizer = memopt.build_optimizer(model, "muon")
    muon, adamw = optimizer.param_groups
    assert muon["use_muon"] and not adamw["use_muon"]
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert sorted(muon["param_names"]) == sorted(
        f"model.layers.0.{'self_attn' if p[0] in 'qkvo' else 'mlp'}.{p}.weight" for p in projections
    )
    assert "model.embed_tokens.weight" in adamw["param_names"] and "model.norm.weight" in adamw["param_names"]
    assert ("lm_head.weight" in adamw["param_names"]) is not tied  # tied: the embedding's weight is the head's
    rule = KINDS["hidden_linear_weight"](model)
    assert not rule("lm_head.weight", model.lm_head.weight)


def test_a_vector_in_a_muon_group_and_bad_options_are_refused_with_the_fix():
    net = _net()
    with pytest.raises(ValueError, match=r"parameter '2.bias' has shape \(40,\).*use_muon=False"):
        memopt.build_optimizer(net, "muon", split=lambda name, p: name.startswith(("2.", "3.")))
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        Muon([nn.Parameter(torch.ones(2, 2))], adjust_lr_fn="rms")
    with pytest.raises(ValueError, match="ns_steps"):
        Muon([nn.Parameter(torch.ones(2, 2))], ns_steps=100)
