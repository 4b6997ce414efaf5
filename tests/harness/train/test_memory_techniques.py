"""memopt train with the techniques that change the model: bf16 parameters, sparsity, weight normalization."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.mark.parametrize(
    "settings", [{"param_dtype": "bf16-sr", "sparsity": 0.5}, {"param_dtype": "bf16-master"}], ids=str
)
def test_the_harness_trains_with_bf16_parameters_and_sparsity_and_resumes_exactly(tiny, settings):
    from memopt.harness.train.loop import Trainer, train

    full = train(tiny("full", **settings))
    trainer = Trainer(tiny("full-check", **settings))
    assert all(p.dtype == torch.bfloat16 for p in trainer.model.parameters())
    part = tiny("part", **settings, max_steps=6, schedule_steps=12)
    train(part)
    resumed = train(tiny("part", **settings, resume=True))
    assert resumed.final_val_loss == full.final_val_loss
    if settings.get("sparsity"):
        linear = [m for m in trainer.model.modules() if isinstance(m, nn.Linear)]
        assert all(float((m.weight == 0).float().mean()) >= 0.49 for m in linear)


def test_the_harness_rejects_bad_technique_settings(tiny):
    from memopt.harness.train.errors import ConfigError
    from memopt.harness.train.loop import Trainer

    with pytest.raises(ConfigError, match=r"--sparsity 1.5: the fraction of weights pruned must be in"):
        Trainer(tiny(sparsity=1.5))
    with pytest.raises(ConfigError, match=r"--param-dtype 'fp16': choose one of"):
        Trainer(tiny(param_dtype="fp16"))
    with pytest.raises(ConfigError, match="drop --dtype bf16"):
        Trainer(tiny(param_dtype="bf16-sr", dtype="bf16"))


def test_weight_norm_reparameterises_every_linear_layer_and_resumes_exactly(tiny):
    from torch.nn.utils import parametrize

    from memopt.harness.train.errors import CheckpointError
    from memopt.harness.train.loop import Trainer, train

    plain = Trainer(tiny("plain-check"))
    trainer = Trainer(tiny("wn-check", weight_norm=True))
    linear = [m for m in trainer.model.modules() if isinstance(m, nn.Linear)]
    assert linear and all(parametrize.is_parametrized(m, "weight") for m in linear)
    # w = g v / |v| starts as the plain model's weight (same seed), with g = |w| per output row
    for (name, p_plain), m in zip(
        [(n, m.weight) for n, m in plain.model.named_modules() if isinstance(m, nn.Linear)], linear
    ):
        torch.testing.assert_close(m.weight, p_plain, msg=name)
        g = m.parametrizations.weight.original0
        torch.testing.assert_close(g.squeeze(1), p_plain.norm(dim=1))
    names = [n for n, _ in trainer.model.named_parameters()]
    assert any(n.endswith("parametrizations.weight.original0") for n in names)
    assert not any(n.endswith("q_proj.weight") for n in names)

    full = train(tiny("full", weight_norm=True))
    unnormalized = train(tiny("none"))
    assert full.final_val_loss != unnormalized.final_val_loss
    train(tiny("part", weight_norm=True, max_steps=6, schedule_steps=12))
    resumed = train(tiny("part", weight_norm=True, resume=True))
    assert resumed.final_val_loss == full.final_val_loss
    with pytest.raises(CheckpointError, match=r"made by another configuration:\n  .*weight_norm"):
        train(tiny("part", resume=True, max_steps=12))  # the checkpoint is of a weight-normalized model


def test_weight_norm_settings_errors(tiny):
    from memopt.harness.train.errors import ConfigError
    from memopt.harness.train.loop import Trainer
    from memopt.harness.train.reparam import apply_tract, apply_weight_norm

    with pytest.raises(ConfigError, match=r"--weight-norm with --sparsity 0\.5: pruning zeroes entries of w"):
        Trainer(tiny(weight_norm=True, sparsity=0.5))
    tied = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    tied[1].weight = tied[0].weight
    with pytest.raises(ConfigError, match="shared with another module"):
        apply_weight_norm(tied)
    with pytest.raises(ConfigError, match=r"no nn\.Linear or nn\.Conv2d"):
        apply_weight_norm(nn.Sequential(nn.ReLU()))
    with pytest.raises(ConfigError, match=r"first layer is an nn.Embedding \(0\), which takes token ids"):
        apply_tract(tied, 0.1)
    with pytest.raises(ConfigError, match="--tract 0: Invalid lambda_"):
        apply_tract(nn.Sequential(nn.Conv2d(1, 2, 3)), 0)
