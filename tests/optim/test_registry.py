"""The registry: names, descriptions, the Linear/other split, and hyperparameter routing."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import Tiny

import memopt
from memopt.registry.specs import accepted_hparams, recommended_hparams

ISSUE_NAMES = ["adamw", "adamw_sn", "adamw_snsm", "adagrad_sn", "adagrad_snsm", "rmsprop_sn", "adagrad_norm"]
BASELINES = ["sgd", "adagrad", "rmsprop", "adam"]


def test_list_optimizers_has_every_name_with_a_description():
    listed = memopt.list_optimizers()
    assert set(ISSUE_NAMES + BASELINES) <= set(listed)
    assert all(isinstance(d, str) and len(d) > 10 for d in listed.values())


@pytest.mark.parametrize("name", ISSUE_NAMES + BASELINES)
def test_every_registry_optimizer_builds_steps_and_lowers_a_loss(name):
    torch.manual_seed(0)
    model = Tiny()
    hparams = recommended_hparams(name)
    if "snsm" in name:
        hparams["rank"] = 4
    optimizer = memopt.build_optimizer(model, name, **hparams)
    x = torch.randint(0, 20, (32,))
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = model(x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_linear_weights_are_compressed_and_the_rest_plain():
    model = Tiny()
    optimizer = memopt.build_optimizer(model, "adamw_snsm", rank=4)
    compressed, plain = optimizer.param_groups
    assert compressed["param_names"] == ["up.weight", "down.weight"]
    assert set(plain["param_names"]) == {"embed.weight", "norm.weight", "norm.bias", "up.bias"}
    assert compressed["rank"] == 4 and compressed["subset_size"] == "heuristics"
    assert plain["rank"] is None and plain["subset_size"] is None
    model(torch.randint(0, 20, (8,))).backward()
    optimizer.step()
    assert set(optimizer.state[model.embed.weight]) == {"step", "exp_avg", "exp_avg_sq"}
    assert "sm_basis" in optimizer.state[model.up.weight]


def test_custom_split():
    model = Tiny()
    optimizer = memopt.build_optimizer(model, "adamw_sn", split=lambda name, p: name == "embed.weight")
    assert optimizer.param_groups[0]["param_names"] == ["embed.weight"]


def test_shared_hyperparameters_reach_both_groups():
    optimizer = memopt.build_optimizer(Tiny(), "adamw_snsm", lr=0.03, betas=(0.8, 0.99), weight_decay=0.1, rank=2)
    for group in optimizer.param_groups:
        assert group["lr"] == 0.03 and group["betas"] == (0.8, 0.99) and group["weight_decay"] == 0.1


def test_accepted_hparams_follow_the_preset_signature():
    assert {"lr", "betas", "eps", "weight_decay", "subset_size", "rank", "update_proj_gap", "proj_type"} <= set(
        accepted_hparams("adamw_snsm")
    )
    assert "rank" not in accepted_hparams("adamw_sn")


def test_recommended_hparams_scale_subset_norm_lr_about_10x():
    assert recommended_hparams("adamw_sn")["lr"] == pytest.approx(10 * recommended_hparams("adamw")["lr"])
    recommended_hparams("adamw")["lr"] = 1.0  # a copy: the registry is unchanged
    assert recommended_hparams("adamw")["lr"] != 1.0
