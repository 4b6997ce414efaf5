"""Offloaded runs equal plain runs bit for bit: every engine optimizer, both tiers, 20 steps of gradient
accumulation (2 microbatches) with global-norm clipping, and on the disk tier without clipping (parameters
then step inside the backward pass); every state format; bf16 parameters against ``MasterWeightOptimizer``."""

from __future__ import annotations

import pytest
import torch
from offload_models import assert_same_tensors, batches, hparams_for, tiny_model, train

from memopt.offload import engine_optimizers, offload
from memopt.registry.specs import build_optimizer
from memopt.wrappers import MasterWeightOptimizer, master_copy

STEPS, ACCUMULATION, CLIP = 20, 2, 0.5
DATA = batches(STEPS, ACCUMULATION)


def plain_run(name: str, clip: float | None, **extra):
    model = tiny_model()
    optimizer = build_optimizer(model, name, **hparams_for(name, **extra))
    train(model, optimizer, DATA, clip=clip, external_clip=True)
    return model, optimizer


def offload_run(name: str, to: str, tmp_path, clip: float | None, **extra):
    model = tiny_model()
    path = tmp_path if to == "disk" else None
    optimizer = offload(
        name, model, to, path, max_grad_norm=clip, accumulation_steps=ACCUMULATION, **hparams_for(name, **extra)
    )
    train(model, optimizer, DATA, clip=clip)
    return model, optimizer


def test_every_engine_optimizer_is_covered():
    names = engine_optimizers()
    assert {"adamw", "adamw8bit", "adamw_snsm", "adagrad_norm", "lion", "et_adam"} <= set(names)
    assert "adafactor" not in names and "nag_gs" not in names


@pytest.mark.parametrize("clip", [CLIP, None], ids=["clip", "noclip"])
@pytest.mark.parametrize("name", engine_optimizers())
def test_offloaded_equals_plain(name, clip, tmp_path):
    plain_model, plain = plain_run(name, clip)
    # without clipping the parameters step inside backward, the same code for both tiers but the store
    for to in ("cpu", "disk") if clip is not None else ("disk",):
        model, optimizer = offload_run(name, to, tmp_path, clip)
        for (n, a), b in zip(plain_model.named_parameters(), model.parameters()):
            assert torch.equal(a, b), f"{name} to={to}: parameter {n} differs after {STEPS} steps"
        assert_same_tensors(plain.state_dict(), optimizer.state_dict(), f"{name} to={to} state_dict")
        if clip is not None:
            assert optimizer.last_grad_norm > 0
        optimizer.close()


@pytest.mark.parametrize("storage", ["bfloat16", "8bit", "4bit"])
@pytest.mark.parametrize("name", ["adamw", "adamw_snsm"])
def test_every_state_format(name, storage, tmp_path):
    extra = {"state_storage": storage, "stochastic_rounding": storage == "bfloat16"}
    plain_model, plain = plain_run(name, CLIP, **extra)
    model, optimizer = offload_run(name, "disk", tmp_path, CLIP, **extra)
    assert all(torch.equal(a, b) for a, b in zip(plain_model.parameters(), model.parameters()))
    state = optimizer.state_dict()
    assert_same_tensors(plain.state_dict(), state, f"{name} {storage}")
    if name == "adamw":  # the compressed presets' states of these tiny layers stay float32 (under 4096 elements)
        dtypes = {v.dtype for s in state["state"].values() for v in s.values() if torch.is_tensor(v)}
        assert (torch.bfloat16 if storage == "bfloat16" else torch.uint8) in dtypes


@pytest.mark.parametrize("to", ["cpu", "disk"])
def test_bf16_parameters_step_a_float32_master_off_the_model(to, tmp_path):
    """bf16 parameters: the offloaded optimizer equals MasterWeightOptimizer, and holds the masters itself
    (on the disk tier, in the files)."""
    data = DATA[:8]
    reference_model = tiny_model(dtype=torch.bfloat16)
    reference = MasterWeightOptimizer(
        reference_model, master_copy(reference_model), lambda m: build_optimizer(m, "adamw8bit", lr=1e-2)
    )
    train(reference_model, reference, data, clip=CLIP, external_clip=False)

    model = tiny_model(dtype=torch.bfloat16)
    optimizer = offload("adamw8bit", model, to, tmp_path if to == "disk" else None, lr=1e-2,
                        accumulation_steps=ACCUMULATION)  # fmt: skip
    train(model, optimizer, data)
    assert all(torch.equal(a, b) for a, b in zip(reference_model.parameters(), model.parameters()))
    if to == "disk":
        assert all(m.numel() == 0 for m in optimizer.masters())  # the masters are on disk between steps
    assert_same_tensors(reference.state_dict(), optimizer.state_dict(), "bf16")
