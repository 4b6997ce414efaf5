"""Bad input fails at once with a message that names the parameter or value and the fix."""

from __future__ import annotations

import pytest
import torch

import memopt


def p(*shape):
    return torch.zeros(*shape, requires_grad=True)


ERROR_INPUTS = [
    (lambda: memopt.AdamW([p(3)], lr=-1.0), r"Invalid lr: -1\.0\. lr must be a finite number >= 0"),
    (lambda: memopt.AdamW([p(3)], eps=-1e-8), r"Invalid eps: -1e-08"),
    (lambda: memopt.AdamW([p(3)], lr=float("nan")), r"Invalid lr: nan"),
    (lambda: memopt.AdamW([p(3)], weight_decay=-0.1), r"Invalid weight_decay"),
    (lambda: memopt.AdamW([p(3)], betas=(1.0, 0.999)), r"Invalid betas\[0\] \(beta1\): 1\.0\. .* \[0, 1\)"),
    (lambda: memopt.AdamWSN([p(3)], betas=(0.9, 1.5)), r"Invalid betas\[1\] \(beta2\): 1\.5\. .* \[0, 1\]"),
    (lambda: memopt.AdamW([p(3)], betas=(0.9,)), r"betas must be a pair"),
    (
        lambda: memopt.AdamWSN([p(3)], betas=(0.9, 1.0)),
        r"bias_correction=True with betas\[1\] \(beta2\) = 1.*Set bias_correction=False",
    ),
    (lambda: memopt.AdamWSN([p(3, 3)], subset_size=0), r"Invalid subset_size: 0\. Use 'heuristics'"),
    (lambda: memopt.AdamWSN([p(3, 3)], subset_size="rows"), r"Invalid subset_size: 'rows'"),
    (lambda: memopt.AdamWSNSM([p(4, 4)], rank=0), r"Invalid rank: 0\. rank must be an integer >= 1"),
    (lambda: memopt.AdamWSNSM([p(4, 4)], rank=-3), r"Invalid rank: -3"),
    (lambda: memopt.AdamWSNSM([p(4, 4)], update_proj_gap=0), r"Invalid update_proj_gap: 0"),
    (lambda: memopt.AdamWSNSM([p(4, 4)], proj_type="svdd"), r"Invalid proj_type: 'svdd'.*Did you mean 'svd'"),
    (lambda: memopt.AdamWSNSM([p(4, 4)], proj_policy="carry"), r"Invalid proj_policy: 'carry'"),
    (lambda: memopt.AdamWSNSM([p(4)]), r"shape \(4,\), but Subspace-Momentum projects matrices.*rank=None"),
    (lambda: memopt.AdamWSNSM([p(2, 3, 4)]), r"shape \(2, 3, 4\), but Subspace-Momentum projects matrices"),
    (lambda: memopt.SGD([p(3)], nesterov=True), r"Nesterov momentum requires momentum > 0"),
    (lambda: memopt.Adagrad([p(3)], initial_accumulator_value=-1.0), r"Invalid initial_accumulator_value"),
    (lambda: memopt.RMSprop([p(3)], alpha=1.0, centered=True), r"centering needs an EMA"),
    (lambda: memopt.AdamW([torch.zeros(3, dtype=torch.complex64, requires_grad=True)]), r"is complex.*view_as_real"),
    (lambda: memopt.AdamW([{"params": [p(3)], "momentum_type": "nesterov"}]), r"Invalid momentum_type: 'nesterov'"),
    (lambda: memopt.build_optimizer(torch.nn.Linear(2, 2), "adamw_sm"), r"Unknown optimizer 'adamw_sm'.*Did you mean"),
    (
        lambda: memopt.build_optimizer(torch.nn.Linear(2, 2), "adamw_sn", subsetsize=4),
        r"no hyperparameter 'subsetsize'.*'subset_size'",
    ),
    (lambda: memopt.build_optimizer(torch.nn.Linear(2, 2).requires_grad_(False), "adamw"), r"no trainable parameters"),
]


@pytest.mark.parametrize(("make", "message"), ERROR_INPUTS, ids=[m for _, m in ERROR_INPUTS])
def test_invalid_input_raises_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_sparse_gradient_names_the_parameter():
    model = torch.nn.Embedding(10, 4, sparse=True)
    optimizer = memopt.build_optimizer(model, "adamw_sn")
    model(torch.tensor([1, 2])).sum().backward()
    before = model.weight.detach().clone()
    with pytest.raises(ValueError, match=r"parameter 'weight' has a sparse gradient.*sparse=False"):
        optimizer.step()
    assert torch.equal(model.weight.detach(), before)  # nothing was changed


def test_names_from_build_optimizer_appear_in_messages():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"parameter '0.bias'"):
        memopt.build_optimizer(model, "adamw_snsm", split=lambda name, param: True)
