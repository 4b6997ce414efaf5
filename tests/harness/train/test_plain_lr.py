"""``plain_lr``: the harness's learning rate for the parameters that are not nn.Linear weights."""

from __future__ import annotations

import pytest
import torch

from memopt.harness.train import optimizers as opt_lib
from memopt.harness.train.errors import ConfigError


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4),
                               torch.nn.Linear(4, 10, bias=False))  # fmt: skip


def train(net: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    tokens = torch.randint(0, 10, (3, 5), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(tokens).flatten(0, 1), tokens.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("name", ["adamw", "adamw8bit", "adafactor", "adamw_sn", "adamw_snsm"])
def test_every_optimizer_gets_the_plain_group_at_its_own_rate(name):
    net = model()
    optimizer = opt_lib.build(net, name, opt_lib.resolve_hparams(name, {"plain_lr": 0.05}, 0.001, 4))
    linear, plain = optimizer.param_groups
    assert linear["lr"] == 0.001 and plain["lr"] == 0.05
    assert linear["param_names"] == ["1.weight", "3.weight"]
    assert plain["param_names"] == ["0.weight", "1.bias", "2.weight", "2.bias"]
    train(net, optimizer)


def test_adamw_with_plain_lr_equal_to_lr_is_adamw():
    """Splitting the group changes nothing but the structure: same rates, same parameters after 3 steps."""
    one, two = model(), model()
    train(one, opt_lib.build(one, "adamw", {"lr": 0.01}))
    train(two, opt_lib.build(two, "adamw", {"lr": 0.01, "plain_lr": 0.01}))
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    three = model()
    train(three, opt_lib.build(three, "adamw", {"lr": 0.01, "plain_lr": 0.1}))
    assert not torch.allclose(three[0].weight, one[0].weight) and "plain_lr" in opt_lib.accepted_hparams("sgd")


def test_a_bad_plain_lr_names_the_flag():
    message = r"--optimizer adamw with lr=0\.01, plain_lr=-1\.0: plain_lr must be non-negative"
    with pytest.raises(ConfigError, match=message):
        opt_lib.build(model(), "adamw", {"lr": 0.01, "plain_lr": -1.0})
