"""Checkpoints of offloaded optimizers: save after 10 steps, load into a fresh model and an optimizer with
offloading switched on or off, 10 more steps: bit for bit the uninterrupted 20-step run."""

from __future__ import annotations

import io

import pytest
import torch
from offload_models import batches, hparams_for, tiny_model, train

from memopt.offload import offload
from memopt.registry.specs import build_optimizer

DATA = batches(20, 2)
CLIP = 0.5


def make(name: str, to: str | None, tmp_path, **extra):
    model = tiny_model()
    if to is None:
        return model, build_optimizer(model, name, **hparams_for(name, **extra)), True
    path = tmp_path if to == "disk" else None
    optimizer = offload(name, model, to, path, max_grad_norm=CLIP, accumulation_steps=2, **hparams_for(name, **extra))
    return model, optimizer, False


def roundtrip(value):
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    ("name", "extra", "first", "second"),
    [
        ("adamw8bit", {}, "disk", None),
        ("adamw8bit", {}, None, "disk"),
        ("adamw_snsm", {}, "disk", "cpu"),
        ("adamw", {"state_storage": "4bit"}, "cpu", "disk"),
    ],
)
def test_resume_is_bit_exact_switching_offload(name, extra, first, second, tmp_path):
    model, optimizer, _ = make(name, None, tmp_path, **extra)
    train(model, optimizer, DATA, clip=CLIP, external_clip=True)

    model_a, optimizer_a, external_a = make(name, first, tmp_path, **extra)
    train(model_a, optimizer_a, DATA[:10], clip=CLIP, external_clip=external_a)
    saved = roundtrip({"model": model_a.state_dict(), "optimizer": optimizer_a.state_dict()})

    model_b, optimizer_b, external_b = make(name, second, tmp_path, **extra)
    model_b.load_state_dict(saved["model"])
    optimizer_b.load_state_dict(saved["optimizer"])
    train(model_b, optimizer_b, DATA[10:], clip=CLIP, external_clip=external_b)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model_b.parameters()))


def test_a_plain_state_dict_is_refused_where_masters_are_expected(tmp_path):
    model = tiny_model(dtype=torch.bfloat16)
    optimizer = offload("adamw", model, "disk", tmp_path)
    with pytest.raises(ValueError, match=r'loads \{"inner", "masters"\}'):
        optimizer.load_state_dict(build_optimizer(tiny_model(), "adamw").state_dict())
