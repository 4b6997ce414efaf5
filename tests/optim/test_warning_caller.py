"""Setting adjustments warn once per parameter group, listing the parameters, at the user's line."""

from __future__ import annotations

import warnings

import torch
from torch import nn

import memopt


def _caught(build) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build()
    return [w for w in caught if issubclass(w.category, UserWarning)]


def test_rank_clamp_warns_once_for_all_matrices_at_the_callers_line():
    model = nn.Sequential(*(nn.Linear(4, 3) for _ in range(8)))
    line = None

    def build():
        nonlocal line
        line = build.__code__.co_firstlineno + 3
        memopt.build_optimizer(model, "adamw_snsm", rank=8)

    (warning,) = _caught(build)
    assert warning.filename == __file__ and warning.lineno == line
    message = str(warning.message)
    assert message.startswith("rank=8 exceeds what proj_type='svd' allows for 8 matrices: parameter ")
    assert "parameter '0.weight' clamped to 3" in message and message.endswith("and 2 more.")


def test_subset_clamp_warns_once_at_the_class_call():
    params = [torch.zeros(6, requires_grad=True), torch.zeros(4, requires_grad=True)]
    (warning,) = _caught(lambda: memopt.AdamWSN(params, subset_size=10))
    assert warning.filename == __file__
    assert str(warning.message).count("clamped to") == 2


def test_add_param_group_warns_at_its_caller():
    optimizer = memopt.AdamWSNSM([torch.zeros(3, 3, requires_grad=True)], rank=2)
    (warning,) = _caught(lambda: optimizer.add_param_group({"params": [torch.zeros(2, 5, requires_grad=True)],
                                                            "rank": 4}))  # fmt: skip
    assert warning.filename == __file__ and "clamped to 2" in str(warning.message)
