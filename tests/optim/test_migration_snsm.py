"""Reproducing runs of the Subset-Norm/Subspace-Momentum authors' code and of GaLore's projector schedule.

Each convention has an explicit option (README, "Migrating from the papers' code"); the reference is
``tests/reference/authors_snsm.py``, written from the description of the authors' code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tests.helpers import trajectory
from tests.reference.authors_snsm import authors_run

from memopt.optim.presets import AdaGradSN, AdamWSN, AdamWSNSM
from memopt.registry.specs import build_optimizer

#: what a user passes to reproduce the authors' AdamW-SN(SM) runs
AUTHORS = {"eps": 1e-6, "eps_placement": "before_bias_correction", "weight_decay_placement": "after_update"}


def _grads(shape: tuple[int, int], steps: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # small gradients, so that eps matters: where it is added shows in the result
    return [1e-4 * torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(steps)]


def _memopt_run(cls, theta0: torch.Tensor, grads: list[torch.Tensor], **hparams) -> tuple[list[torch.Tensor], object]:
    return trajectory(lambda params: cls(params, **hparams), theta0, grads)


@pytest.mark.parametrize("foreach", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("subset_size", ["heuristics", -2])
def test_adamw_sn_with_the_authors_options_reproduces_their_update(subset_size, foreach):
    theta0 = torch.randn(6, 9, dtype=torch.float64)
    grads = _grads((6, 9), 12)
    expected, _ = authors_run(
        theta0, grads, lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1, bias_correction=True,
        subset_size=subset_size,
    )  # fmt: skip
    ours, _ = _memopt_run(
        AdamWSN, theta0, grads, lr=1e-2, weight_decay=0.1, subset_size=subset_size, foreach=foreach, **AUTHORS
    )
    for k, (a, b) in enumerate(zip(ours, expected)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=f"step {k + 1}")
    # memopt's defaults (eps after the correction, 1e-8, decay before the update) give another run
    default, _ = _memopt_run(AdamWSN, theta0, grads, lr=1e-2, weight_decay=0.1, subset_size=subset_size)
    assert (default[-1] - expected[-1]).abs().max() > 1e-6


def test_adagrad_sn_without_bias_correction_differs_only_in_the_decay_order():
    theta0 = torch.randn(5, 4, dtype=torch.float64)
    grads = _grads((5, 4), 8, seed=1)
    expected, _ = authors_run(
        theta0, grads, lr=0.1, betas=(0.9, 1.0), eps=1e-6, weight_decay=0.05, bias_correction=False,
        subset_size="heuristics",
    )  # fmt: skip
    ours, _ = _memopt_run(AdaGradSN, theta0, grads, lr=0.1, weight_decay=0.05, **AUTHORS)
    torch.testing.assert_close(ours[-1], expected[-1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("schedule, rebuilt", [("sn-sm", [1, 5, 10]), ("galore", [1, 6, 11])])
def test_projector_schedules_rebuild_where_their_codes_do(schedule, rebuilt):
    theta0 = torch.randn(8, 5, dtype=torch.float64)
    grads = _grads((8, 5), 12, seed=2)
    expected, expected_rebuilt = authors_run(
        theta0, grads, lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, bias_correction=True,
        subset_size="heuristics", rank=2, update_proj_gap=5, schedule=schedule,
    )  # fmt: skip
    assert expected_rebuilt == rebuilt
    param = torch.nn.Parameter(theta0.clone())
    optimizer = AdamWSNSM([param], lr=1e-2, rank=2, update_proj_gap=5, proj_schedule=schedule, **AUTHORS)
    seen, basis = [], None
    for t, (g, want) in enumerate(zip(grads, expected), start=1):
        param.grad = g.clone()
        optimizer.step()
        new = optimizer.state[param]["sm_basis"].clone()
        if basis is None or not torch.equal(new, basis):
            seen.append(t)
        basis = new
        torch.testing.assert_close(param.detach(), want, rtol=1e-10, atol=1e-13, msg=f"step {t}")
    assert seen == rebuilt


def test_an_unknown_schedule_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"proj_schedule.*galore"):
        AdamWSNSM([torch.nn.Parameter(torch.ones(4, 4))], rank=2, proj_schedule="GaLore")


@pytest.mark.parametrize(
    "option, value", [("eps_placement", "before"), ("weight_decay_placement", "after")]
)  # fmt: skip
def test_unknown_placements_are_refused_with_the_choices(option, value):
    with pytest.raises(ValueError, match=option):
        AdamWSN([torch.nn.Parameter(torch.ones(4, 4))], **{option: value})


def test_the_authors_options_leave_the_fused_adam_kernel_for_the_plain_group_path():
    """eps before the correction and decay after the update are not what torch's fused Adam computes: such a
    group runs the foreach path, and equals the reference path."""
    theta0 = torch.randn(7, 3, dtype=torch.float64)
    grads = _grads((7, 3), 6, seed=3)
    plain = {"subset_size": None, "lr": 1e-2, "weight_decay": 0.1, **AUTHORS}
    fast, _ = _memopt_run(AdamWSN, theta0, grads, **plain)
    reference, _ = _memopt_run(AdamWSN, theta0, grads, foreach=False, **plain)
    torch.testing.assert_close(fast[-1], reference[-1], rtol=1e-12, atol=1e-14)


def test_the_readme_migration_example_builds_the_authors_configuration():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Migrating from the papers' code", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    compressed, plain = scope["optimizer"].param_groups
    for group in (compressed, plain):
        assert group["eps"] == 1e-6
        assert group["eps_placement"] == "before_bias_correction"
        assert group["weight_decay_placement"] == "after_update"
    assert compressed["subset_size"] == -2 and compressed["rank"] == 16
    assert plain["rank"] is None


def test_build_optimizer_gives_the_galore_schedule_to_the_compressed_group_only():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    compressed, plain = build_optimizer(model, "adamw_snsm", rank=2, proj_schedule="galore").param_groups
    assert compressed["proj_schedule"] == "galore" and plain["rank"] is None
