"""memopt train with the memory techniques that change the model: bf16 parameters and sparsity."""

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
