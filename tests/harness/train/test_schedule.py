"""LR schedules are torch's schedulers, composed: warm-up, cosine to a floor, SGDR restarts."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, SequentialLR

from memopt.harness.train.errors import ConfigError
from memopt.harness.train.schedule import ScheduleConfig, build_scheduler


def lrs(config: ScheduleConfig, steps: int, lr: float = 1.0) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_scheduler(optimizer, config, steps, lr)
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_warmup_then_cosine_to_the_floor():
    values = lrs(ScheduleConfig("cosine", warmup_steps=4, min_lr_ratio=0.1), 24, lr=2.0)
    assert values[:5] == pytest.approx([0.5, 0.875, 1.25, 1.625, 2.0])
    decay = 20
    expected = [0.2 + 0.9 * (1 + math.cos(math.pi * t / decay)) for t in range(decay)]
    assert values[4:] == pytest.approx(expected)
    assert min(values[4:]) > 0.2


def test_sgdr_restarts_every_period():
    config = ScheduleConfig("sgdr", warmup_steps=2, min_lr_ratio=0.0, restart_steps=5)
    values = lrs(config, 17)
    assert values[2] == values[7] == values[12] == 1.0
    assert values[3] < 1.0 and values[6] < values[5]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, config, 17, 1.0)
    assert isinstance(scheduler, SequentialLR)
    assert isinstance(scheduler._schedulers[1], CosineAnnealingWarmRestarts)


def test_constant_and_no_warmup():
    assert lrs(ScheduleConfig("constant", warmup_steps=2), 5) == pytest.approx([0.5, 0.75, 1.0, 1.0, 1.0])
    assert lrs(ScheduleConfig("cosine", warmup_steps=0, min_lr_ratio=0.0), 4)[0] == 1.0


def test_schedule_errors():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match=r"--schedule 'cosin': unknown schedule \(did you mean 'cosine'"):
        build_scheduler(optimizer, ScheduleConfig("cosin"), 10, 1.0)
    with pytest.raises(ConfigError, match="--warmup-steps 10: must be at least 0 and below the schedule's 10"):
        build_scheduler(optimizer, ScheduleConfig("cosine", warmup_steps=10), 10, 1.0)


@pytest.mark.parametrize("kind", ["cosine", "sgdr"])
def test_groups_with_their_own_rates_decay_to_their_own_floors(kind):
    """Two groups at 1.0 and 0.05 (the harness's plain_lr): each follows the one-group schedule scaled to
    its own peak, so the smaller rate never rises to the larger one's floor."""
    config = ScheduleConfig(kind, warmup_steps=3, min_lr_ratio=0.1, restart_steps=6)
    first, second = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [first]}, {"params": [second], "lr": 0.05}], lr=1.0)
    scheduler = build_scheduler(optimizer, config, 20, 1.0)
    pairs = []
    for _ in range(20):
        pairs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    alone = lrs(config, 20)
    assert [p[0] for p in pairs] == pytest.approx(alone)
    assert [p[1] for p in pairs] == pytest.approx([0.05 * v for v in alone])
    assert min(p[1] for p in pairs) >= 0.005 - 1e-12 and max(p[1] for p in pairs) <= 0.05 + 1e-12
