"""Sweeps for ``memopt compare --tune``: grids, the choice of the best value, and the edge warning."""

from __future__ import annotations

import math

import pytest

from memopt.harness.bench.tuning import (
    DEFAULT_BETAS,
    choose,
    default_grid,
    log_grid,
    parse_grid,
    parse_tune,
    sweep,
)
from memopt.harness.train.errors import ConfigError


def synthetic_loss(lr: float, best: float = 3e-3) -> float:
    """A loss curve with its minimum at ``best``, quadratic in log(lr)."""
    return 3.0 + (math.log10(lr) - math.log10(best)) ** 2


def test_the_sweep_picks_the_minimum_of_a_known_loss_curve():
    grid = default_grid("lr", 1e-3, points=7, span=1.0)
    assert grid == pytest.approx([1e-4, 2.154e-4, 4.642e-4, 1e-3, 2.154e-3, 4.642e-3, 1e-2], rel=1e-3)
    found = sweep("adamw", "lr", grid, synthetic_loss)
    # 3e-3 lies between 2.154e-3 and 4.642e-3; 2.154e-3 is closer in log scale (0.144 vs 0.190 decades)
    assert found.value == pytest.approx(2.154e-3, rel=1e-3) and found.chosen == 4
    assert found.losses == [synthetic_loss(v) for v in grid]
    assert not found.at_edge and found.warning is None
    on_grid = sweep("adamw", "lr", log_grid(1e-3, 1e-2, 3), lambda lr: synthetic_loss(lr, best=3.162e-3))
    assert on_grid.value == pytest.approx(3.162e-3, rel=1e-3)


def test_a_choice_at_the_grids_edge_warns_to_widen_it():
    grid = default_grid("lr", 1e-3, points=5, span=1.0)
    high = sweep("adamw_sn", "lr", grid, lambda lr: synthetic_loss(lr, best=1.0))  # optimum far above the grid
    assert high.value == grid[-1] and high.at_edge
    assert "adamw_sn: lr=0.01 is the highest value of its grid" in high.warning and "widen the grid" in high.warning
    low = sweep("adamw", "lr", grid, lambda lr: synthetic_loss(lr, best=1e-6))
    assert low.chosen == 0 and "lowest value" in low.warning
    assert high.to_json()["at_edge"] is True and high.to_json()["chosen"] == grid[-1]


def test_diverged_values_lose_and_all_diverged_is_an_error():
    assert choose([4.0, 3.5, math.inf]) == 1  # bracketed by a diverged run: not an edge
    found = sweep("adamw", "lr", [1e-3, 1e-2, 1e-1], lambda lr: math.inf if lr > 0.05 else synthetic_loss(lr, 1))
    assert found.chosen == 1 and not found.at_edge and found.to_json()["losses"][2] == "inf"
    with pytest.raises(ConfigError, match="every value of the grid diverged"):
        choose([math.inf, math.nan])


def test_grid_flags():
    spec = parse_grid("lr=1e-4:1e-2:3")
    assert (spec.scope, spec.key, spec.values) == (None, "lr", [1e-4, 1e-3, 1e-2])
    spec = parse_grid("adamw:betas=(0.9,0.95);(0.9,0.999)")
    assert (spec.scope, spec.key, spec.values) == ("adamw", "betas", [(0.9, 0.95), (0.9, 0.999)])
    assert parse_grid("weight_decay=0;0.1").values == [0, 0.1]
    with pytest.raises(ConfigError, match=r"--grid 'lr': expected \[OPTIMIZER:\]KEY=LOW:HIGH:N"):
        parse_grid("lr")
    with pytest.raises(ConfigError, match="LOW:HIGH:N needs two positive numbers"):
        parse_grid("lr=0:1:3")
    assert default_grid("betas", (0.9, 0.999)) == DEFAULT_BETAS
    with pytest.raises(ConfigError, match=r"--tune proj_type: no default grid .* give one with --grid proj_type="):
        default_grid("proj_type", "svd")
    assert parse_tune("lr, plain_lr") == ["lr", "plain_lr"] and parse_tune(None) == []
    with pytest.raises(ConfigError, match="--tune 'lr,lr': each hyperparameter once"):
        parse_tune("lr,lr")


def test_a_key_can_be_tuned_for_one_optimizer_alone():
    from memopt.harness.bench.compare import CompareConfig

    config = CompareConfig(optimizers=["adamw", "adamw_groups"], tune=parse_tune("lr,adamw_groups:plain_lr"))
    config.validate()
    assert config.tune_keys("adamw") == ["lr"] and config.tune_keys("adamw_groups") == ["lr", "plain_lr"]
    with pytest.raises(ConfigError, match=r"'sgd' is not among --optimizers adamw,adamw_groups"):
        CompareConfig(optimizers=["adamw", "adamw_groups"], tune=["sgd:lr"]).validate()
