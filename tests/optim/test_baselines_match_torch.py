"""The baselines of the memopt engine equal torch.optim: 100 random steps, float64, rtol 1e-10."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import assert_all_close, make_grads, make_params, run

import memopt

SHAPES = [(7, 3), (4,), (3, 5, 2), ()]

CASES = [
    (memopt.SGD, torch.optim.SGD, dict(lr=0.05)),
    (memopt.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
    (memopt.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    (memopt.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    (memopt.Adagrad, torch.optim.Adagrad, dict(lr=0.1)),
    (memopt.Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.3)),
    (memopt.RMSprop, torch.optim.RMSprop, dict(lr=0.01)),
    (memopt.RMSprop, torch.optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)),
    (memopt.Adam, torch.optim.Adam, dict(lr=0.01)),
    (memopt.Adam, torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, maximize=True)),
    (memopt.Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    (memopt.AdamW, torch.optim.AdamW, dict(lr=0.01)),
    (memopt.AdamW, torch.optim.AdamW, dict(lr=0.01, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.3)),
]


@pytest.mark.parametrize("foreach", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize(("ours", "theirs", "kwargs"), CASES, ids=lambda v: getattr(v, "__name__", None))
def test_equals_torch_optim(ours, theirs, kwargs, foreach):
    params = make_params(SHAPES)
    grads = make_grads(SHAPES, steps=100)
    expected, _ = run(lambda ps: theirs(ps, **kwargs), params, grads)
    actual, _ = run(lambda ps: ours(ps, foreach=foreach, **kwargs), params, grads)
    assert_all_close(actual, expected, rtol=1e-10)
    # the run really moved the parameters (the comparison is not between two untouched copies)
    assert all(not torch.equal(a, p.detach()) for a, p in zip(actual, params) if p.numel())


def test_adamw_state_equals_torch_state():
    params = make_params(SHAPES)
    grads = make_grads(SHAPES, steps=20)
    _, theirs = run(lambda ps: torch.optim.AdamW(ps, lr=0.01), params, grads)
    _, ours = run(lambda ps: memopt.AdamW(ps, lr=0.01), params, grads)
    for p_ours, p_theirs in zip(
        [p for g in ours.param_groups for p in g["params"]], [p for g in theirs.param_groups for p in g["params"]]
    ):
        torch.testing.assert_close(ours.state[p_ours]["exp_avg"], theirs.state[p_theirs]["exp_avg"], rtol=1e-12, atol=0)
        torch.testing.assert_close(
            ours.state[p_ours]["exp_avg_sq"], theirs.state[p_theirs]["exp_avg_sq"], rtol=1e-12, atol=0
        )
        assert ours.state[p_ours]["step"] == int(theirs.state[p_theirs]["step"])
