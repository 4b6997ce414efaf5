"""The engine's contract: fast path = reference path, exact resume, torch.optim conventions."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import assert_all_close, make_grads, make_params, run, save_and_reload
from torch import nn

import memopt

SHAPES = [(12, 5), (5, 12), (7,), (3, 4, 2), ()]
MATRIX_SHAPES = [(12, 5), (5, 12)]

pytestmark = pytest.mark.filterwarnings("ignore:subset_size=4 is larger")

# every preset with settings that exercise its options; (factory(params, **kw), shapes)
PRESETS = {
    "sgd": (lambda ps, **kw: memopt.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, **kw), SHAPES),
    "adagrad": (lambda ps, **kw: memopt.Adagrad(ps, lr=0.1, lr_decay=0.01, **kw), SHAPES),
    "rmsprop": (lambda ps, **kw: memopt.RMSprop(ps, lr=0.01, momentum=0.5, centered=True, **kw), SHAPES),
    "adam": (lambda ps, **kw: memopt.Adam(ps, lr=0.01, weight_decay=0.1, **kw), SHAPES),
    "adamw": (lambda ps, **kw: memopt.AdamW(ps, lr=0.01, **kw), SHAPES),
    "adamw_sn": (lambda ps, **kw: memopt.AdamWSN(ps, lr=0.01, weight_decay=0.1, **kw), SHAPES),
    "adamw_sn_chunks": (lambda ps, **kw: memopt.AdamWSN(ps, lr=0.01, subset_size=-2, **kw), SHAPES),
    "adagrad_sn": (lambda ps, **kw: memopt.AdaGradSN(ps, lr=0.1, subset_size=4, **kw), SHAPES),
    "rmsprop_sn": (lambda ps, **kw: memopt.RMSPropSN(ps, lr=0.01, **kw), SHAPES),
    "adagrad_norm": (lambda ps, **kw: memopt.AdaGradNorm(ps, lr=0.5, momentum=0.9, **kw), SHAPES),
    "adagrad_norm_global": (lambda ps, **kw: memopt.AdaGradNorm(ps, lr=0.5, global_norm=True, **kw), SHAPES),
    **{
        f"adamw_snsm_{proj}_{policy}": (
            lambda ps, proj=proj, policy=policy, **kw: memopt.AdamWSNSM(
                ps, lr=0.01, rank=2, update_proj_gap=4, proj_type=proj, proj_policy=policy, **kw
            ),
            MATRIX_SHAPES,
        )
        for proj in ("svd", "randomized", "topk", "uniform")
        for policy in ("reset", "keep", "transform")
    },
    "adagrad_snsm": (
        lambda ps, **kw: memopt.AdaGradSNSM(ps, lr=0.1, rank=3, update_proj_gap=3, proj_type="topk", **kw),
        MATRIX_SHAPES,
    ),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_fast_path_equals_reference_path(name, dtype):
    factory, shapes = PRESETS[name]
    params, grads = make_params(shapes, dtype), make_grads(shapes, 25, dtype)
    fast, _ = run(lambda ps: factory(ps, foreach=True), params, grads)
    reference, _ = run(lambda ps: factory(ps, foreach=False), params, grads)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    assert_all_close(fast, reference, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("foreach", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_save_load_continue_is_bit_identical(name, foreach):
    factory, shapes = PRESETS[name]
    params, grads = make_params(shapes, torch.float32), make_grads(shapes, 12, torch.float32)
    make = lambda ps: factory(ps, foreach=foreach)
    straight, _ = run(make, params, grads)
    halfway, optimizer = run(make, params, grads[:5])
    new_params, new_optimizer = save_and_reload(optimizer, make, halfway)
    resumed, _ = run(make, new_params, grads[5:], optimizer=new_optimizer)
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)


def test_load_keeps_state_dtypes_and_non_tensor_state():
    params = [torch.randn(6, 4, dtype=torch.bfloat16, requires_grad=True), torch.randn(8, 3, requires_grad=True)]
    make = lambda ps: memopt.AdamWSNSM(ps, rank=2, proj_type="topk")
    grads = [[g.to(p.dtype) for g, p in zip(step, params)] for step in make_grads([(6, 4), (8, 3)], 3)]
    _, optimizer = run(make, params, grads)
    original = {i: dict(s) for i, s in enumerate(optimizer.state.values())}
    _, loaded = save_and_reload(optimizer, make, params)
    for i, state in enumerate(loaded.state.values()):
        for key, value in original[i].items():
            if torch.is_tensor(value):
                assert state[key].dtype == value.dtype, key
                assert torch.equal(state[key], value), key
            else:
                assert state[key] == value, key
    bf16_state = loaded.state[loaded.param_groups[0]["params"][0]]
    assert bf16_state["subset_sq"].dtype == torch.float32  # accumulators of 16-bit params stay float32
    assert bf16_state["sm_indices"].dtype == torch.int64


def test_mismatched_state_is_rejected_on_load():
    model = nn.Linear(8, 4)
    optimizer = memopt.build_optimizer(model, "adamw_snsm", rank=2)
    model(torch.randn(3, 8)).sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()
    other = memopt.build_optimizer(nn.Linear(8, 6), "adamw_snsm", rank=2)  # another model: other shapes
    with pytest.raises(ValueError, match=r"parameter 'weight': state 'sm_[a-z_]+' has shape"):
        other.load_state_dict(saved)
    sn_only = memopt.build_optimizer(nn.Linear(8, 4), "adamw_sn")
    sn_saved = sn_only.state_dict()
    sn_saved["state"] = saved["state"]
    with pytest.raises(ValueError, match="unexpected state keys"):
        sn_only.load_state_dict(sn_saved)


def test_lr_scheduler_closure_and_hooks():
    model = nn.Linear(4, 2)
    optimizer = memopt.build_optimizer(model, "adamw_sn", lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=3)
    calls = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    x = torch.randn(5, 4)

    def closure():
        optimizer.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss

    lrs = []
    for _ in range(4):
        loss = optimizer.step(closure)
        assert torch.is_tensor(loss)
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert calls == ["pre", "post"] * 4
    assert lrs[0] == pytest.approx(0.1) and lrs[1] < lrs[0] and lrs[3] == pytest.approx(0.1)  # warm restart


def test_lr_change_takes_effect():
    params, grads = make_params([(4, 3)]), make_grads([(4, 3)], 1)
    a, _ = run(lambda ps: memopt.AdamWSN(ps, lr=0.1), params, grads)
    b, _ = run(lambda ps: memopt.AdamWSN(ps, lr=0.2), params, grads)
    torch.testing.assert_close(b[0] - params[0].detach(), 2 * (a[0] - params[0].detach()))


def test_add_param_group_and_per_group_hyperparameters():
    w = torch.randn(6, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    optimizer = memopt.AdamWSNSM([w], rank=2, lr=0.01)
    optimizer.add_param_group({"params": [b], "rank": None, "subset_size": None, "lr": 0.5})
    assert optimizer.param_groups[1]["lr"] == 0.5
    w.grad, b.grad = torch.ones_like(w), torch.ones_like(b)
    optimizer.step()
    assert set(optimizer.state[b]) == {"step", "exp_avg", "exp_avg_sq"}  # plain Adam for the vector
    assert {"sm_exp_avg", "sm_basis", "subset_sq"} <= set(optimizer.state[w])
    torch.testing.assert_close(b.detach(), b.detach())
    with pytest.raises(ValueError, match="Subspace-Momentum projects matrices"):
        optimizer.add_param_group({"params": [torch.zeros(4, requires_grad=True)]})
    assert len(optimizer.param_groups) == 2  # the rejected group was not kept


def test_zero_grad_and_params_without_grad_are_skipped():
    w = torch.randn(4, 3, requires_grad=True)
    v = torch.randn(5, requires_grad=True)
    optimizer = memopt.AdamWSN([w, v])
    w.grad = torch.randn(4, 3)
    before = v.detach().clone()
    optimizer.step()
    assert torch.equal(v.detach(), before) and v not in optimizer.state
    optimizer.zero_grad()
    assert w.grad is None


def test_bfloat16_parameters_track_float64():
    shapes = [(16, 8), (8,)]
    grads64 = make_grads(shapes, 20)
    grads16 = [[g.to(torch.bfloat16) for g in step] for step in grads64]
    params64 = make_params(shapes, torch.float64)
    params16 = [p.detach().to(torch.bfloat16).requires_grad_() for p in params64]
    make = lambda ps: memopt.AdamWSNSM([{"params": ps[:1]}, {"params": ps[1:], "rank": None}], lr=1e-3, rank=4)
    high, _ = run(make, params64, grads64)
    low16, _ = run(make, params16, grads16)
    for a, b in zip(low16, high):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.double(), b, rtol=0.02, atol=0.02)


@pytest.mark.parametrize("stochastic_rounding", [False, True])
def test_16_bit_parameters_are_updated_one_at_a_time(stochastic_rounding):
    # the reference path's float32 copies (of a bfloat16 parameter, its gradient and its states) live for
    # one parameter's update only: the step's temporaries do not grow with the number of parameters
    from memopt.harness.memory.tracker import LiveTensorTracker

    count, shape = 12, (64, 64)
    params = [torch.randn(shape).to(torch.bfloat16).requires_grad_() for _ in range(count)]
    optimizer = memopt.SGD([{"params": params, "stochastic_rounding": stochastic_rounding}], lr=0.1, momentum=0.9)
    for param in params:
        param.grad = torch.randn(shape).to(torch.bfloat16)
    optimizer.step()  # creates the momentum buffers
    before = sum(p.untyped_storage().nbytes() for p in params)
    with LiveTensorTracker() as tracker:
        tracker.track(params, "parameters")
        tracker.track([p.grad for p in params], "gradients")
        tracker.mark_optimizer_state(optimizer)
        optimizer.step()
    summary = tracker.summary()
    one_param_fp32 = 64 * 64 * 4
    assert summary.maximum["parameters"] == before
    # measured: 6.25 float32 copies of one parameter with stochastic rounding (working copy, gradient,
    # momentum, update, rounding noise); 36 to 39 when every parameter's copies were made up front
    assert summary.maximum["temporaries"] <= 8 * one_param_fp32
