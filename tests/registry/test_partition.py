"""Per-module optimizer choice: ``build_optimizer(model, {selector: name, ...})``."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from memopt.optim.chained import ChainedOptimizer
from memopt.registry.partition import partition
from memopt.registry.specs import build_optimizer
from memopt.state.accounting import state_bytes


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, 16)
        self.proj = nn.Linear(16, 64)
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 32, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(torch.relu(self.proj(self.embed(tokens)))))


def _model(seed: int = 0) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM()


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(step)
    tokens = torch.randint(0, 32, (4, 8), generator=generator)
    return nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.roll(1, dims=1).flatten())


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        optimizer.zero_grad()
        _loss(model, step).backward()
        optimizer.step()


def _names(optimizer: torch.optim.Optimizer) -> list[list[str]]:
    return [group["param_names"] for group in optimizer.param_groups]


def test_kinds_patterns_and_the_rest_take_each_parameter_once_in_selector_order():
    model = _model()
    parts = partition(model, {"linear_weight": "adamw_snsm", "embedding": "adamw8bit", "*.bias": "sgd", "*": "adamw"})
    got = {part.label: (part.optimizer, [n for n, _ in part.named]) for part in parts}
    assert got == {
        "linear_weight": ("adamw_snsm", ["proj.weight", "head.weight"]),
        "embedding": ("adamw8bit", ["embed.weight"]),
        "*.bias": ("sgd", ["proj.bias", "norm.bias"]),
        "*": ("adamw", ["norm.weight"]),
    }
    norm = partition(model, {"norm": "adamw", "matrix": "adamw_sn", "vector": "sgd"})
    assert [(p.label, [n for n, _ in p.named]) for p in norm] == [
        ("norm", ["norm.weight", "norm.bias"]),
        ("matrix", ["embed.weight", "proj.weight", "head.weight"]),
        ("vector", ["proj.bias"]),
    ]


def test_a_callable_selector_and_per_part_hyperparameters():
    model = _model()
    optimizer = build_optimizer(
        model,
        {lambda name, p: name.startswith("head"): ("adamw", {"lr": 1e-2}), "*": {"optimizer": "adamw", "lr": 1e-4}},
        weight_decay=0.0,
    )
    assert isinstance(optimizer, ChainedOptimizer)
    rest = ["embed.weight", "proj.weight", "proj.bias", "norm.weight", "norm.bias"]
    assert _names(optimizer) == [["head.weight"], rest]
    assert [g["lr"] for g in optimizer.param_groups] == [1e-2, 1e-4]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.0]


def test_the_papers_split_as_a_partition_equals_the_registry_preset_bit_for_bit():
    """{"linear_weight": adamw_snsm, "*": adamw} is what the adamw_snsm preset does with its two groups."""
    hparams = dict(lr=3e-3, weight_decay=0.01, betas=(0.9, 0.95), eps=1e-8)
    preset_model, chained_model = _model(), _model()
    preset = build_optimizer(preset_model, "adamw_snsm", rank=4, update_proj_gap=3, **hparams)
    chained = build_optimizer(chained_model, {"linear_weight": ("adamw_snsm", {"rank": 4, "update_proj_gap": 3}),
                                              "*": "adamw"}, **hparams)
    _train(preset_model, preset, range(8))
    _train(chained_model, chained, range(8))
    for (name, a), (_, b) in zip(preset_model.named_parameters(), chained_model.named_parameters()):
        assert torch.equal(a, b), name
    assert state_bytes(chained) == state_bytes(preset)


def test_each_part_steps_exactly_as_its_optimizer_alone():
    model, alone = _model(), _model()
    chained = build_optimizer(model, {"linear_weight": "adamw_sn", "embedding": "adamw8bit", "*": "sgd"}, lr=1e-2)
    reference = [
        build_optimizer(alone, {"linear_weight": "adamw_sn", "*": "adamw_sn"}, lr=1e-2).parts()["linear_weight"],
    ]
    # the other parts alone, over the same parameters
    named = dict(alone.named_parameters())
    reference.append(type(chained.parts()["embedding"])([named["embed.weight"]], lr=1e-2))
    reference.append(torch.optim.SGD([named[n] for n in chained.parts()["*"].param_groups[0]["param_names"]], lr=1e-2))
    for step in range(5):
        chained.zero_grad()
        _loss(model, step).backward()
        chained.step()
        for opt in reference:
            opt.zero_grad()
        _loss(alone, step).backward()
        for opt in reference:
            opt.step()
    for (name, a), (_, b) in zip(model.named_parameters(), alone.named_parameters()):
        assert torch.equal(a, b), name


def test_schedulers_state_dict_and_resume_continue_exactly():
    def build(model: nn.Module) -> tuple[ChainedOptimizer, torch.optim.lr_scheduler.LRScheduler]:
        rules = {"linear_weight": ("adamw_snsm", {"rank": 4, "update_proj_gap": 2}), "embedding": "adamw8bit",
                 "*": "adamw"}
        opt = build_optimizer(model, rules, lr=1e-2)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)

    straight = _model()
    opt, sched = build(straight)
    for step in range(8):
        _train(straight, opt, range(step, step + 1))
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * (1 + torch.cos(torch.tensor(0.8 * torch.pi)).item()) / 2)
    assert len({g["lr"] for g in opt.param_groups}) == 1  # the scheduler reached every part's groups

    resumed = _model()
    opt2, sched2 = build(resumed)
    for step in range(4):
        _train(resumed, opt2, range(step, step + 1))
        sched2.step()
    buffer = io.BytesIO()
    torch.save({"model": resumed.state_dict(), "opt": opt2.state_dict(), "sched": sched2.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh = _model(seed=1)
    fresh.load_state_dict(saved["model"])
    opt3, sched3 = build(fresh)
    opt3.load_state_dict(saved["opt"])
    sched3.load_state_dict(saved["sched"])
    for step in range(4, 8):
        _train(fresh, opt3, range(step, step + 1))
        sched3.step()
    for (name, a), (_, b) in zip(straight.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), name
    assert state_bytes(opt3) == state_bytes(opt) == sum(state_bytes(o) for o in opt.optimizers)


def test_add_param_group_goes_to_the_named_part():
    model = _model()
    opt = build_optimizer(model, {"linear_weight": "adamw", "*": "sgd"}, lr=1e-3)
    extra = nn.Parameter(torch.zeros(3))
    opt.add_param_group({"params": [extra], "param_names": ["extra"], "part": "*", "lr": 0.5})
    assert opt.param_groups[-1] is opt.parts()["*"].param_groups[-1]
    extra.grad = torch.ones(3)
    opt.step()
    assert torch.equal(extra.detach(), torch.full((3,), -0.5))
    with pytest.raises(ValueError, match=r"needs 'part' set to one of \['linear_weight', '\*'\]"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "param_names": ["x"]})


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({}, "The partition is empty"),
        ({"linear_weight": "adamw"}, r"No selector of the partition takes the parameters embed.weight, proj.bias"),
        (
            {"linear_weigth": "adamw", "*": "adamw"},
            r"'linear_weigth' matches no trainable parameter.*Did you mean 'linear_weight'",
        ),
        ({"*": "adamww"}, r"Unknown optimizer 'adamww'"),
        ({"*": 3}, r"Partition choice 3 for selector '\*'"),
        ({"linear_weight": "meta_storm", "*": "adamw"}, r"needs optimizer.step\(closure\)"),
    ],
)
def test_bad_partitions_are_refused_with_the_selector_named(rules, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(_model(), rules)


def test_a_shared_hyperparameter_no_part_takes_is_refused():
    with pytest.raises(ValueError, match=r"No optimizer of the partition takes the hyperparameters \['rank'\]"):
        build_optimizer(_model(), {"linear_weight": "adamw", "*": "sgd"}, rank=4)


def test_loading_a_state_dict_of_another_partition_is_refused_before_anything_loads():
    model = _model()
    opt = build_optimizer(model, {"linear_weight": "adamw", "*": "sgd"})
    _train(model, opt, range(2))
    other = build_optimizer(_model(), {"linear_weight": "adamw8bit", "*": "sgd"})
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(ValueError, match="saved with parts"):
        other.load_state_dict(opt.state_dict())
    assert other.state_dict()["classes"] == before["classes"]
    with pytest.raises(ValueError, match="it has no 'parts'"):
        other.load_state_dict(build_optimizer(_model(), "adamw").state_dict())
