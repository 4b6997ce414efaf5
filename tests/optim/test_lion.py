"""Lion (Chen et al. 2023) as an engine estimator: the paper's rule, lion-pytorch, state formats, resume."""

from __future__ import annotations

import io

import pytest
import torch
from lion_pytorch import Lion as ReferenceLion
from tests.reference.lion import lion_run

from memopt.registry.specs import build_optimizer, get_spec, list_optimizers
from memopt.state.accounting import state_bytes

SETTINGS = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)


def _grads(shape: tuple[int, ...], steps: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randn(shape, generator=generator, dtype=dtype) for _ in range(steps)]


def _model(dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Tanh(), torch.nn.Linear(96, 8)).to(dtype)


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(16, 64, generator=generator).to(next(model.parameters()).dtype)
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()


def test_lion_is_a_registry_optimizer():
    assert "lion" in list_optimizers()
    assert get_spec("lion").recommended["lr"] > 0


@pytest.mark.parametrize("shape", [(12, 5), (30,), (3, 4, 5)])
@pytest.mark.parametrize("foreach", [None, False])
def test_lion_follows_the_papers_algorithm(shape, foreach):
    grads = _grads(shape, 40)
    theta0 = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    param = torch.nn.Parameter(theta0.clone())
    optimizer = build_optimizer(torch.nn.ParameterList([param]), "lion", foreach=foreach, **SETTINGS)
    expected, m = lion_run(theta0, grads, lr=1e-2, beta1=0.9, beta2=0.99, weight_decay=0.1)
    for g, e in zip(grads, expected):
        param.grad = g.clone()
        optimizer.step()
        torch.testing.assert_close(param.detach(), e, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(optimizer.state[param]["exp_avg"], m, rtol=1e-12, atol=1e-15)


def test_lion_equals_lion_pytorch():
    ours, theirs = _model(), _model()
    _train(ours, build_optimizer(ours, "lion", **SETTINGS), range(25))
    _train(theirs, ReferenceLion(theirs.parameters(), **SETTINGS), range(25))
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_lion_keeps_one_buffer_and_8bit_keeps_a_quarter():
    model = _model()
    full = build_optimizer(model, "lion", **SETTINGS)
    _train(model, full, range(1))
    n = sum(p.numel() for p in model.parameters())
    assert state_bytes(full) == 4 * n + 8 * len(list(model.parameters()))  # exp_avg + the step counters
    small = _model()
    eight = build_optimizer(small, "lion", state_storage="8bit", **SETTINGS)
    _train(small, eight, range(1))
    big = 96 * 64  # the only tensor above the 4096-element threshold: 1-byte codes, a float32 maximum per
    # 256-element block and its map's name, instead of 4-byte floats
    assert state_bytes(eight) == state_bytes(full) - 4 * big + big + 4 * (big // 256) + len("signed/256")


@pytest.mark.parametrize("storage", ["default", "8bit", "bfloat16"])
def test_lion_resumes_bit_exactly(storage):
    kwargs = dict(SETTINGS, state_storage=storage)
    if storage == "bfloat16":
        kwargs["stochastic_rounding"] = True
    straight = _model()
    optimizer = build_optimizer(straight, "lion", **kwargs)
    _train(straight, optimizer, range(10))

    first = _model()
    opt1 = build_optimizer(first, "lion", **kwargs)
    _train(first, opt1, range(5))
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = _model(seed=3)
    resumed.load_state_dict(saved["model"])
    opt2 = build_optimizer(resumed, "lion", **kwargs)
    opt2.load_state_dict(saved["opt"])
    _train(resumed, opt2, range(5, 10))
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_lion_rejects_bad_betas():
    with pytest.raises(ValueError, match="betas"):
        build_optimizer(_model(), "lion", lr=1e-3, betas=(0.9, 1.5))
