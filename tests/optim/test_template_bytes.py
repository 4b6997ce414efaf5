"""The state template alone predicts the state's bytes: ``template_bytes`` (from the formats' ``nbytes``,
nothing allocated) equals ``state_bytes`` of the state that ``prepare_state`` and a first step create, for
every registry optimizer, every storage option it takes and both parameter dtypes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import memopt
from memopt.registry.specs import accepted_hparams
from memopt.state.accounting import template_bytes

STORAGE = {
    "default": {},
    "float32": {"state_storage": "float32"},
    "bfloat16": {"state_storage": "bfloat16", "stochastic_rounding": True},
    "8bit": {"state_storage": "8bit"},
    "8bit_block_100": {"state_storage": "8bit", "quant_block_size": 100},  # a partial last block
    "4bit": {"state_storage": "4bit"},
}
#: registry-name variants whose state differs from the defaults'
EXTRA = {
    "adagrad_norm[global]": ("adagrad_norm", {"global_norm": True}),
    "adamw_snsm[topk]": ("adamw_snsm", {"rank": 3, "proj_type": "topk"}),
    "rmsprop[centered, update_momentum]": ("rmsprop", {"centered": True, "momentum": 0.5}),
    "meta_storm[per_coordinate]": ("meta_storm", {"per_coordinate": True}),
}
CLOSURE = {"meta_storm", "storm_plus", "quasar_agd", "nesterov_agd"}


def cases() -> list:
    """``(name, hparams, storage variant)`` of every case, with an id."""
    found = [(name, name, {}, variant) for name in memopt.list_optimizers() for variant in STORAGE]
    found += [(label, name, hparams, "default") for label, (name, hparams) in EXTRA.items()]
    return [
        pytest.param(name, hparams, variant, id=f"{label}/{variant}")
        for label, name, hparams, variant in found
        if variant == "default" or "state_storage" in accepted_hparams(name)
    ]


def model(dtype: torch.dtype, device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    with torch.device(device):  # a 4160-element matrix (quantized), a wide one, a norm, a vector
        return nn.Sequential(nn.Linear(64, 65), nn.LayerNorm(65), nn.Linear(65, 3)).to(dtype)


def build(net: nn.Module, name: str, hparams: dict, variant: str) -> torch.optim.Optimizer:
    settings = dict(memopt.recommended_hparams(name), **hparams, **STORAGE[variant])
    if "rank" in accepted_hparams(name):
        settings.setdefault("rank", 2)
    return memopt.build_optimizer(net, name, **settings)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize(("name", "hparams", "variant"), cases())
def test_template_bytes_equal_state_bytes_after_a_step(name, hparams, variant, dtype):
    net = model(dtype)
    optimizer = build(net, name, hparams, variant)
    predicted = template_bytes(optimizer)
    assert memopt.state_bytes(optimizer) == 0  # nothing was created to predict it
    x = torch.randn(8, 64, dtype=dtype)

    def closure():
        optimizer.zero_grad()
        loss = net(x).float().square().mean()
        loss.backward()
        return loss

    if name in CLOSURE:
        optimizer.step(closure)
    else:
        closure()
        optimizer.step()
    assert memopt.state_bytes(optimizer) == predicted


@pytest.mark.parametrize(("name", "hparams", "variant"), cases())
def test_template_bytes_equal_a_prepared_state_on_the_meta_device(name, hparams, variant):
    optimizer = build(model(torch.float32, "meta"), name, hparams, variant)
    predicted = template_bytes(optimizer)
    optimizer.prepare_state()  # every entry, group state included, on the meta device: nothing allocated
    assert memopt.state_bytes(optimizer) == predicted
