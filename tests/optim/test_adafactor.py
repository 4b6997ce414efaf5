"""Adafactor: equal to transformers' Adafactor, the closed forms of the paper, exact resume, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from tests.helpers import make_grads, make_params, run, save_and_reload
from torch import nn
from transformers.optimization import Adafactor as HFAdafactor

import memopt
from memopt.optim.adafactor import decay_coefficient, relative_step_size

SHAPES = [(6,), (5, 4), (3, 4, 5), ()]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on a shared machine (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# 1-D, 2-D and 3-D (batched factoring), and a scalar

CONFIGS = {
    "paper_defaults": {},
    "relative_step_off": dict(relative_step=False, lr=1e-2, scale_parameter=False),
    "relative_step_off_scaled": dict(relative_step=False, lr=1e-2),
    "scale_parameter_off": dict(scale_parameter=False),
    "warmup_init": dict(warmup_init=True),
    "beta1": dict(beta1=0.9),
    "beta1_weight_decay_clip": dict(beta1=0.5, weight_decay=0.1, clip_threshold=0.5, decay_rate=-0.6),
}


def _states(optimizer):
    return [optimizer.state[p] for g in optimizer.param_groups for p in g["params"]]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_equals_transformers_adafactor(name):
    kwargs = CONFIGS[name]
    params, grads = make_params(SHAPES, torch.float32), make_grads(SHAPES, 50, torch.float32)
    expected, theirs = run(lambda ps: HFAdafactor(ps, **kwargs), params, grads)
    actual, ours = run(lambda ps: memopt.Adafactor(ps, **kwargs), params, grads)
    for a, e, p in zip(actual, expected, params):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=0)
        assert not torch.equal(a, p.detach())  # the parameters really moved
    for mine, hf in zip(_states(ours), _states(theirs)):
        assert mine["step"] == hf["step"] == 50
        for key in ("exp_avg", "exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col"):
            assert (key in mine) == (key in hf), key
            if key in mine:
                torch.testing.assert_close(mine[key], hf[key], rtol=1e-6, atol=0)


def test_bfloat16_parameters_match_transformers_with_float32_statistics():
    shapes = [(8, 6), (6,)]
    params = make_params(shapes, torch.bfloat16)
    grads = make_grads(shapes, 20, torch.bfloat16)
    expected, _ = run(lambda ps: HFAdafactor(ps, beta1=0.9), params, grads)
    actual, ours = run(lambda ps: memopt.Adafactor(ps, beta1=0.9), params, grads)
    for a, e in zip(actual, expected):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    matrix_state, vector_state = _states(ours)
    assert {matrix_state[k].dtype for k in ("exp_avg_sq_row", "exp_avg_sq_col", "exp_avg")} == {torch.float32}
    assert vector_state["exp_avg_sq"].dtype == torch.float32
    assert matrix_state["exp_avg_sq_row"].shape == (8,) and matrix_state["exp_avg_sq_col"].shape == (6,)


def test_three_dimensional_tensors_factor_the_last_two_dims():
    param = torch.zeros(3, 4, 5, requires_grad=True)
    optimizer = memopt.Adafactor([param])
    param.grad = torch.ones(3, 4, 5)
    optimizer.step()
    state = optimizer.state[param]
    assert state["exp_avg_sq_row"].shape == (3, 4) and state["exp_avg_sq_col"].shape == (3, 5)
    assert "exp_avg_sq" not in state and "exp_avg" not in state


# ----------------------------------------------------------------------------- closed forms (§4.7)
def test_rank_one_first_step_is_a_signed_relative_step():
    a = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    b = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    signs = torch.tensor([[1, -1, 1], [-1, -1, 1], [1, 1, -1], [-1, 1, 1]], dtype=torch.float64)
    grad = signs * torch.outer(a, b).sqrt()  # G_ij^2 = a_i b_j
    theta0 = torch.full((4, 3), 0.2, dtype=torch.float64)  # RMS 0.2 > eps2
    param = theta0.clone().requires_grad_()
    optimizer = memopt.Adafactor([param])
    param.grad = grad
    optimizer.step()
    torch.testing.assert_close(param.detach() - theta0, -1e-2 * 0.2 * signs, rtol=1e-12, atol=0)
    zero = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)  # RMS 0: the eps2 floor
    optimizer = memopt.Adafactor([zero])
    zero.grad = grad
    optimizer.step()
    torch.testing.assert_close(zero.detach(), -1e-2 * 1e-3 * signs, rtol=1e-12, atol=0)


def test_update_clipping_brings_the_rms_back_to_the_threshold():
    theta0 = torch.full((5,), 0.5, dtype=torch.float64)
    param = theta0.clone().requires_grad_()
    optimizer = memopt.Adafactor([param], scale_parameter=False)
    param.grad = torch.full((5,), 1e-3, dtype=torch.float64)
    optimizer.step()
    after_first = param.detach().clone()
    param.grad = torch.ones(5, dtype=torch.float64)
    optimizer.step()
    beta2 = 1 - 2**-0.8
    assert beta2 == pytest.approx(0.4257, abs=1e-4)
    v2 = beta2 * (1e-6 + 1e-30) + (1 - beta2) * (1 + 1e-30)
    assert 1 / math.sqrt(v2) == pytest.approx(1.3195, abs=1e-4)  # unclipped U, RMS 1.3195 > d = 1
    torch.testing.assert_close(after_first - param.detach(), torch.full((5,), 1e-2, dtype=torch.float64))


def test_factored_equals_full_on_rank_one_statistics():
    a = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    b = torch.tensor([1.0, 4.0, 0.25, 9.0], dtype=torch.float64)
    magnitude = torch.outer(a, b).sqrt()
    generator = torch.Generator().manual_seed(0)
    grads = [magnitude * torch.randint(0, 2, (3, 4), generator=generator).mul(2).sub(1) for _ in range(30)]
    theta0 = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    matrix = theta0.clone().requires_grad_()
    vector = theta0.flatten().clone().requires_grad_()
    factored = memopt.Adafactor([matrix], beta1=0.9)
    full = memopt.Adafactor([vector], beta1=0.9)
    for g in grads:
        matrix.grad, vector.grad = g.clone(), g.flatten().clone()
        factored.step()
        full.step()
    assert "exp_avg_sq_row" in factored.state[matrix] and "exp_avg_sq" in full.state[vector]
    torch.testing.assert_close(matrix.detach().flatten(), vector.detach(), rtol=1e-10, atol=0)


def test_schedule_values():
    assert [relative_step_size(t, warmup_init=False) for t in (1, 100, 10**4, 10**6)] == pytest.approx(
        [1e-2, 1e-2, 1e-2, 1e-3]
    )
    assert relative_step_size(100, warmup_init=True) == pytest.approx(1e-4)
    assert [decay_coefficient(t, -0.8) for t in (1, 2, 100, 10**4)] == pytest.approx(
        [0.0, 0.4257, 0.97488, 0.99937], abs=5e-5
    )


# ---------------------------------------------------------------------------- torch.optim contract
@pytest.mark.parametrize("name", ["paper_defaults", "beta1_weight_decay_clip", "relative_step_off"])
def test_save_load_continue_is_bit_identical(name):
    kwargs = CONFIGS[name]
    params, grads = make_params(SHAPES, torch.float32), make_grads(SHAPES, 12, torch.float32)
    make = lambda ps: memopt.Adafactor(ps, **kwargs)
    straight, _ = run(make, params, grads)
    halfway, optimizer = run(make, params, grads[:5])
    new_params, new_optimizer = save_and_reload(optimizer, make, halfway)
    resumed, _ = run(make, new_params, grads[5:], optimizer=new_optimizer)
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)


def test_mismatched_state_is_rejected_on_load():
    model = nn.Linear(6, 4)
    optimizer = memopt.build_optimizer(model, "adafactor", beta1=0.9)
    model(torch.randn(3, 6)).sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()
    with pytest.raises(ValueError, match=r"parameter 'weight': state 'exp_avg(_sq_row)?' has shape"):
        memopt.build_optimizer(nn.Linear(6, 5), "adafactor", beta1=0.9).load_state_dict(saved)
    without_momentum = memopt.build_optimizer(nn.Linear(6, 4), "adafactor")
    own = without_momentum.state_dict()  # its groups (beta1=None) with the saved state
    with pytest.raises(ValueError, match=r"parameter 'weight': unexpected state keys \['exp_avg'\]"):
        without_momentum.load_state_dict({**own, "state": saved["state"]})


def test_lr_is_not_mutated_and_schedulers_drive_an_external_lr():
    param = torch.randn(4, 3, requires_grad=True)
    optimizer = memopt.Adafactor([param])
    param.grad = torch.randn(4, 3)
    optimizer.step()
    assert optimizer.param_groups[0]["lr"] is None
    params, grads = make_params([(4, 3)]), make_grads([(4, 3)], 1)
    small, _ = run(lambda ps: memopt.Adafactor(ps, lr=0.1, relative_step=False, scale_parameter=False), params, grads)
    large, _ = run(lambda ps: memopt.Adafactor(ps, lr=0.2, relative_step=False, scale_parameter=False), params, grads)
    torch.testing.assert_close(large[0] - params[0].detach(), 2 * (small[0] - params[0].detach()))
    param = torch.randn(3, requires_grad=True)
    optimizer = memopt.Adafactor([param], lr=0.1, relative_step=False, scale_parameter=False)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    param.grad = torch.ones(3)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_closure_maximize_and_params_without_grad():
    w = torch.randn(4, 3, requires_grad=True)
    v = torch.randn(5, requires_grad=True)
    optimizer = memopt.Adafactor([w, v], relative_step=False, lr=0.1, scale_parameter=False, maximize=True)
    before_w, before_v = w.detach().clone(), v.detach().clone()

    def closure():
        optimizer.zero_grad()
        loss = w.square().sum()
        loss.backward()
        return loss

    assert torch.is_tensor(optimizer.step(closure))
    assert w.detach().square().sum() > before_w.square().sum()  # ascended
    assert torch.equal(v.detach(), before_v) and v not in optimizer.state


ERRORS = [
    (dict(lr=1e-3), r"Invalid lr=0\.001 with relative_step=True.*Pass lr=None, or set relative_step=False"),
    (dict(relative_step=False), r"Invalid lr=None with relative_step=False: give a learning rate"),
    (dict(relative_step=False, lr=-1.0), r"Invalid lr: -1\.0"),
    (dict(relative_step=False, lr=1e-3, warmup_init=True), r"Invalid warmup_init=True with relative_step=False"),
    (dict(eps=1e-30), r"Invalid eps: 1e-30\. eps must be a pair \(eps1, eps2\)"),
    (dict(eps=(1e-30, -1.0)), r"Invalid eps\[1\] \(eps2\): -1\.0"),
    (dict(clip_threshold=0.0), r"Invalid clip_threshold: 0\.0\. clip_threshold must be a finite number > 0"),
    (dict(decay_rate=0.8), r"Invalid decay_rate: 0\.8\. decay_rate must be a finite number <= 0"),
    (dict(beta1=1.0), r"Invalid beta1: 1\.0\. beta1 must lie in \[0, 1\)"),
    (dict(weight_decay=-0.1), r"Invalid weight_decay: -0\.1"),
]


@pytest.mark.parametrize(("kwargs", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_invalid_hyperparameters_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        memopt.Adafactor([torch.zeros(3, requires_grad=True)], **kwargs)


def test_sparse_gradient_names_the_parameter():
    model = nn.Embedding(10, 4, sparse=True)
    optimizer = memopt.build_optimizer(model, "adafactor")
    model(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"parameter 'weight' has a sparse gradient"):
        optimizer.step()


def test_registry_builds_one_group_that_lowers_a_loss_and_counts_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 8), nn.LayerNorm(8), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    optimizer = memopt.build_optimizer(model, "adafactor")
    assert len(optimizer.param_groups) == 1
    x = torch.randint(0, 20, (32,))
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # factored: rows + columns for matrices, full for vectors; 4 bytes each, plus an 8-byte step per tensor
    expected = sum(4 * (sum(p.shape) if p.dim() == 2 else p.numel()) + 8 for p in model.parameters())
    assert memopt.state_bytes(optimizer) == expected
