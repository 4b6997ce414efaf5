"""The techniques themselves: pruning keeps its mask through training, the fp32 master copy, and the
``memopt memory`` command (the harness runs that use them are in tests/harness/train/test_memory_techniques.py)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from torch import nn

import memopt
from memopt.harness.memory.profile import cast_floating
from memopt.harness.memory.sparsity import CompactSparse, prune_model
from memopt.wrappers.master_weights import MasterWeightOptimizer, master_copy


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(4, 6, generator=generator).to(next(model.parameters()).dtype)
        model(x).float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("storage", ["compact", "mask"])
def test_pruning_keeps_the_largest_weights_and_they_stay_the_only_nonzeros(storage):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    dense = [m.weight.detach().clone() for m in (model[0], model[2])]
    report = prune_model(model, 0.75, storage)
    assert report.kept == 12 + 6 and report.total == 48 + 24 and report.sparsity == pytest.approx(0.75)
    for weight, layer in zip(dense, (model[0], model[2])):
        kept = layer.weight != 0
        assert int(kept.sum()) == weight.numel() // 4
        assert weight.abs()[kept].min() >= weight.abs()[~kept].max()  # magnitude pruning
    masks = [(m.weight != 0).clone() for m in (model[0], model[2])]
    _train(model, memopt.build_optimizer(model, "adamw", lr=0.1, weight_decay=0.1))
    for mask, layer in zip(masks, (model[0], model[2])):
        assert torch.equal(layer.weight == 0, ~mask)  # pruned entries stayed zero, kept ones moved
    if storage == "compact":
        assert isinstance(model[0].parametrizations.weight[0], CompactSparse)
        assert model[0].parametrizations.weight.original.shape == (12,)


def test_master_weights_step_the_fp32_copy_and_round_it_into_bf16():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))
    reference = master_copy(model)
    master = master_copy(model)
    cast_floating(model, torch.bfloat16)
    optimizer = MasterWeightOptimizer(model, master, lambda m: memopt.build_optimizer(m, "adamw", lr=1e-2))
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert optimizer.param_groups is optimizer.inner.param_groups  # schedulers see the inner groups
    _train(model, optimizer, steps=3)
    for p, m in zip(model.parameters(), master.parameters()):
        assert m.dtype == torch.float32 and p.grad is None and m.grad is None
        assert torch.equal(p, m.to(torch.bfloat16))
    assert any(not torch.equal(m, r) for m, r in zip(master.parameters(), reference.parameters()))
    assert memopt.state_bytes(optimizer) == memopt.state_bytes(optimizer.inner) > 0
    # a checkpoint restores masters and state exactly
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh_model = master_copy(model)
    fresh_master = master_copy(fresh_model)
    cast_floating(fresh_model, torch.bfloat16)
    fresh = MasterWeightOptimizer(fresh_model, fresh_master, lambda m: memopt.build_optimizer(m, "adamw", lr=1e-2))
    fresh.load_state_dict(state)
    assert fresh.param_groups is fresh.inner.param_groups and fresh.state is fresh.inner.state
    for a, b in zip(fresh.masters(), optimizer.masters()):
        assert torch.equal(a, b)
    _train(model, optimizer, steps=1)
    _train(fresh_model, fresh, steps=1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh_model.parameters()))


def test_memopt_memory_prints_the_breakdown_and_writes_json(tmp_path, capsys):
    from memopt.harness.cli import main

    path = tmp_path / "plan.json"
    argv = ["memory", "--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--microbatches", "2"]
    assert main([*argv, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "activations (saved)" in out and "microbatches 2" in out and "peak" in out
    payload = json.loads(path.read_text())
    assert payload["mode"] == "estimate" and payload["savings"]["microbatches 2"] > 0
    assert payload["peak"] == sum(payload["at_peak"].values())
    assert main(["memory", "--preset", "tiny", "--batch-size", "8", "--microbatches", "3"]) == 2
    assert "--microbatches 3: does not divide --batch-size 8" in capsys.readouterr().err
    assert main(["memory", "--preset", "nano"]) == 2
    assert "--preset 'nano': unknown model preset" in capsys.readouterr().err
