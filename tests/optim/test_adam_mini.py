"""Adam-mini (``memopt.build_optimizer(model, "adam_mini")``) against the authors' ``adam-mini`` package
(``Adam_mini`` 1.1.1) on the same tiny LLaMA (grouped-query attention), data and seed: equal bit for bit."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from adam_mini import Adam_mini
from transformers import LlamaConfig, LlamaForCausalLM

import memopt
from memopt.estimators.base import ParamStep
from memopt.optim.adam_mini import AdamMini, _adam_mini_update
from memopt.state.sharding import ShardSpec

CONFIG = dict(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**CONFIG))


def _train(model: LlamaForCausalLM, optimizer: torch.optim.Optimizer, steps: int = 8) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, CONFIG["vocab_size"], (4, 12), generator=generator)
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()


def test_equals_the_adam_mini_package_on_a_llama_with_grouped_query_attention():
    hparams = {"lr": 3e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    model = _llama()
    optimizer = memopt.build_optimizer(model, "adam_mini", **hparams)
    _train(model, optimizer)
    reference = _llama()
    package = Adam_mini(reference.named_parameters(), **hparams, dim=CONFIG["hidden_size"],
                        n_heads=CONFIG["num_attention_heads"], n_kv_heads=CONFIG["num_key_value_heads"],
                        verbose=False)  # fmt: skip
    _train(reference, package)
    for (name, mine), theirs in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(mine, theirs), name
    # one second moment per head of q (4 heads) and of k (2 key-value heads), per row elsewhere, per norm
    attention = model.model.layers[0].self_attn
    state = optimizer.state
    assert state[attention.q_proj.weight]["exp_avg_sq"].shape == (4, 1)
    assert state[attention.k_proj.weight]["exp_avg_sq"].shape == (2, 1)
    assert state[attention.v_proj.weight]["exp_avg_sq"].shape == (16, 1)
    assert state[model.model.embed_tokens.weight]["exp_avg_sq"].shape == (40, 1)
    assert state[model.lm_head.weight]["exp_avg_sq"].shape == (40, 1)
    assert state[model.model.norm.weight]["exp_avg_sq"].shape == ()


def test_the_groups_follow_the_structure_and_norms_take_no_decay():
    model = _llama()
    optimizer = memopt.build_optimizer(model, "adam_mini", weight_decay=0.1)
    blocks = {name: (g["mini_block"], g["weight_decay"]) for g in optimizer.param_groups for name in g["param_names"]}
    assert blocks["model.layers.0.self_attn.q_proj.weight"] == ("head", 0.1)
    assert blocks["model.layers.1.mlp.down_proj.weight"] == ("row", 0.1)
    assert blocks["model.layers.0.input_layernorm.weight"] == ("tensor", 0.0)
    heads = [g for g in optimizer.param_groups if g["mini_block"] == "head"]
    assert [g["head_rows"] for g in heads] == [8]


def test_head_blocks_that_do_not_divide_the_rows_and_vectors_cut_by_rows_are_refused():
    with pytest.raises(ValueError, match="not a multiple of head_rows=4"):
        AdamMini([torch.nn.Parameter(torch.ones(6, 3))], mini_block="head", head_rows=4)
    with pytest.raises(ValueError, match="mini_block='tensor' or 'coordinate'"):
        AdamMini([torch.nn.Parameter(torch.ones(6))], mini_block="row")


@dataclass(frozen=True)
class _TwoRanks(ShardSpec):
    """Rows ``[start, stop)`` of a tensor cut over two ranks, in one process. In the first pass ``all_reduce``
    records this rank's partial results; in the second it adds the other rank's partial of the same call."""

    log: dict = field(default_factory=dict)

    @property
    def sharded(self) -> bool:
        return True

    def all_reduce(self, tensor, op=None):
        sent = self.log.setdefault(self.start, [])
        if self.log["pass"] == 1:
            sent.append(tensor.clone())
            return tensor
        other = next(v for k, v in self.log.items() if k not in ("pass", self.start, ("calls", self.start)))
        call = self.log.get(("calls", self.start), 0)
        self.log[("calls", self.start)] = call + 1
        return tensor.add_(other[call])


def test_head_blocks_cut_by_a_shard_boundary_sum_both_pieces():
    """A 12 x 5 query matrix of 3 heads of 4 rows, cut after row 6 (inside the second head), as FSDP2 cuts
    rows: both ranks' head statistics and updates equal the whole matrix's."""
    group = {"lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.0, "mini_block": "head", "head_rows": 4}
    generator = torch.Generator().manual_seed(0)
    param, grad = torch.randn(12, 5, generator=generator), torch.randn(12, 5, generator=generator)

    def step(rows: slice, spec) -> torch.Tensor:
        work = param[rows].clone()
        state = {"step": 1, "exp_avg": torch.zeros_like(work), "exp_avg_sq": torch.zeros(3, 1)}
        ps = ParamStep(work, work, grad[rows].clone(), state, 1, 0, "q", {}, shard=spec)
        _adam_mini_update(ps, group)
        return work

    whole = step(slice(0, 12), None)
    log: dict = {"pass": 1}
    pieces = [_TwoRanks((12, 5), 0, 6, log=log), _TwoRanks((12, 5), 6, 12, log=log)]
    for spec in pieces:  # first pass: each rank's partial sums are recorded
        step(slice(spec.start, spec.stop), spec)
    log["pass"] = 2
    sharded = torch.cat([step(slice(s.start, s.stop), s) for s in pieces])
    torch.testing.assert_close(sharded, whole, rtol=1e-6, atol=1e-7)
