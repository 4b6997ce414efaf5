"""``optimizer.add_param_group({"params": [p]})``, torch's plain call, works on every registry optimizer.

``build_optimizer`` names its groups' parameters (for error messages); torch refuses a group without names
next to named ones, so memopt names an added group's parameters by position.
"""

from __future__ import annotations

import pytest
import torch

from memopt.optim.baselines import AdamW
from memopt.registry.specs import build_optimizer, list_optimizers


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


#: optimizers whose line search moves the whole model along one line: one group only, by design
ONE_GROUP = {"quasar_agd", "nesterov_agd"}


@pytest.mark.parametrize("name", sorted(set(list_optimizers()) - ONE_GROUP))
def test_a_group_without_names_joins_a_built_optimizer_and_is_stepped(name):
    model = _model()
    optimizer = build_optimizer(model, name)
    extra = torch.nn.Parameter(torch.ones(3, 4))
    optimizer.add_param_group({"params": [extra]})
    group = optimizer.param_groups[-1]
    assert group["params"] == [extra]
    assert group["param_names"] == [f"param_groups[{len(optimizer.param_groups) - 1}][0]"]
    x = torch.randn(5, 6)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(x).square().mean() + (extra * torch.arange(12.0).reshape(3, 4)).sum()
        loss.backward()
        return loss

    if getattr(optimizer, "needs_closure", False):
        optimizer.step(closure)
    else:
        closure()
        optimizer.step()
    assert not torch.equal(extra.detach(), torch.ones(3, 4))


@pytest.mark.parametrize("name", sorted(ONE_GROUP))
def test_one_group_optimizers_refuse_a_second_group_and_say_why(name):
    optimizer = build_optimizer(_model(), name)
    with pytest.raises(ValueError, match="takes a single parameter group"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))]})
    assert len(optimizer.param_groups) == 1


def test_names_given_to_an_optimizer_without_names_are_dropped():
    model = _model()
    memopt_adamw = AdamW(model.parameters(), lr=1e-2)
    extra = torch.nn.Parameter(torch.zeros(2))
    memopt_adamw.add_param_group({"params": [extra], "param_names": ["extra"]})
    assert "param_names" not in memopt_adamw.param_groups[-1]
