"""Extreme tensoring: the tensor index rule, order 1 = AdaGrad/RMSProp/Adam, the closed forms, memory,
fast path = reference path, exact resume and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from tests.helpers import assert_all_close, make_grads, make_params, run, save_and_reload, trajectory
from torch import nn

import memopt
from memopt.estimators.extreme_tensoring import from_modes, tensor_index, to_modes

SHAPES = [(12, 5), (7,), (3, 4, 2), (), (37, 3)]  # (7,) and (37, 3) need padding at order 3


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on a shared machine (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------- the tensor index
INDEX_CASES = [
    ((512, 512), 3, ((512, 16, 32), (512, 512))),
    ((32000, 512), 3, ((32000, 160, 200), (512, 512))),
    ((1376, 512), 3, ((1376, 32, 43), (512, 512))),
    ((32000, 512), 2, ((32000, 32000), (512, 512))),  # order 2 on a matrix: its own rows and columns
    ((512,), 3, ((512, 16, 4, 8),)),
    ((32003,), 2, ((32003, 179, 179),)),  # prime: padded to 179 * 179 = 32041
    ((7,), 2, ((7, 3, 3),)),  # prime: padded to 9
    ((97,), 5, ((97, 2, 2, 3, 2, 5),)),  # 97 -> 10 x 10 (padded), 10 -> 2 x 5, 5 -> 2 x 3 (padded): 120 in all
    ((3,), 3, ((3, 3),)),  # too small to split: fewer modes than asked
    ((), 3, ((1, 1),)),
    ((4, 1, 6), None, ((4, 4), (6, 6))),  # None: the parameter's own shape, size-1 dims dropped
    ((2, 3, 4, 5), 2, ((6, 6), (20, 20))),  # merge the adjacent pair with the smallest product
    ((2, 3, 4, 5), 1, ((120, 120),)),
]


@pytest.mark.parametrize(("shape", "order", "expected"), INDEX_CASES, ids=str)
def test_tensor_index_rule(shape, order, expected):
    assert tensor_index(shape, order).to_state() == expected


@pytest.mark.parametrize("order", [1, 2, 3, 5, None])
def test_tensor_index_covers_every_coordinate_and_round_trips(order):
    for shape in [(1,), (2,), (5,), (97,), (6, 35), (3, 1, 11, 4), (13, 17), (64, 3, 3, 3), (0, 4)]:
        index = tensor_index(shape, order)
        assert index.order <= (order or len(shape) or 1)
        for dim, split in zip(index.dims, index.modes):
            assert dim <= math.prod(split)
        x = torch.randn(shape)
        as_modes = to_modes(x, index)
        assert as_modes.shape == index.flat_modes
        assert torch.equal(from_modes(as_modes, index, x.shape), x)
        padding = as_modes.numel() - x.numel()
        assert (as_modes == 0).sum() - (x == 0).sum() == padding  # the virtual coordinates are zeros


# ------------------------------------------------------------------------- equalities with torch.optim
@pytest.mark.parametrize("foreach", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize(
    "kwargs", [dict(lr=0.1), dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, eps=1e-6, maximize=True)], ids=str
)
def test_order_one_equals_torch_adagrad(kwargs, foreach):
    # float32: the reference path divides then adds where torch fuses addcdiv, a last-bit difference
    for dtype, rtol, atol in ((torch.float64, 1e-10, 0.0), (torch.float32, 1e-6, 1e-6)):
        params, grads = make_params(SHAPES, dtype), make_grads(SHAPES, 50, dtype)
        expected, _ = run(lambda ps: torch.optim.Adagrad(ps, **kwargs), params, grads)
        actual, _ = run(lambda ps: memopt.ETAdaGrad(ps, et_order=1, foreach=foreach, **kwargs), params, grads)
        assert_all_close(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("foreach", [False, True], ids=["reference", "fast"])
def test_ema_form_of_order_one_equals_rmsprop_adam_and_adamw(foreach):
    params, grads = make_params(SHAPES), make_grads(SHAPES, 50)
    cases = [
        (lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9),
         dict(lr=0.01, betas=(0.0, 0.9), bias_correction=False)),
        (lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.0, 0.99)), dict(lr=0.01, betas=(0.0, 0.99))),
        (lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1), dict(lr=0.01, weight_decay=0.1)),
    ]  # fmt: skip
    for theirs, ours in cases:
        expected, _ = run(theirs, params, grads)
        actual, _ = run(lambda ps, ours=ours: memopt.ETAdam(ps, et_order=1, foreach=foreach, **ours), params, grads)
        assert_all_close(actual, expected, rtol=1e-10)


# ------------------------------------------------------------------------------------ closed forms
_steps = trajectory  # the parameter after each step (float64)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_constant_magnitude_gradient_closed_form(order):
    shape = (6, 8)  # unpadded at orders 2-4: (6, 8), (6, 2, 4), (2, 3, 2, 4)
    index = tensor_index(shape, order)
    assert not index.is_padded and index.order == order
    generator = torch.Generator().manual_seed(0)
    c, lr, d = 0.3, 0.05, 48
    grads = [c * torch.randint(0, 2, shape, generator=generator).double().mul(2).sub(1) for _ in range(6)]
    theta0 = torch.zeros(shape, dtype=torch.float64)
    trajectory, _ = _steps(lambda ps: memopt.ETAdaGrad(ps, lr=lr, eps=0.0, et_order=order), theta0, grads)
    previous = theta0
    for t, (g, theta) in enumerate(zip(grads, trajectory), start=1):
        denominator = c * math.sqrt(t) * d ** ((order - 1) / (2 * order))  # AdaGrad's c sqrt(t), times d^((p-1)/2p)
        torch.testing.assert_close(previous - theta, lr * g / denominator, rtol=1e-12, atol=0)
        previous = theta


def test_order_two_on_a_matrix_is_the_fourth_root_of_row_times_column_sums():
    shape, lr, eps = (5, 7), 0.1, 1e-10
    grads = make_grads([shape], 6)
    grads = [step[0] for step in grads]
    theta0 = torch.zeros(shape, dtype=torch.float64)
    trajectory, optimizer = _steps(lambda ps: memopt.ETAdaGrad(ps, lr=lr, eps=eps, et_order=2), theta0, grads)
    rows, cols = torch.zeros(5, dtype=torch.float64), torch.zeros(7, dtype=torch.float64)
    previous = theta0
    for g, theta in zip(grads, trajectory):
        rows += g.square().sum(dim=1)
        cols += g.square().sum(dim=0)
        h = torch.outer(rows, cols).pow(0.25)  # H_ij = (r_i c_j)^(1/4)
        torch.testing.assert_close(previous - theta, lr * g / (h + eps), rtol=1e-12, atol=0)
        previous = theta
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    torch.testing.assert_close(state["et_sq_0"], rows, rtol=1e-12, atol=0)
    torch.testing.assert_close(state["et_sq_1"], cols, rtol=1e-12, atol=0)


def test_prime_size_is_padded_with_virtual_zero_gradient_coordinates():
    lr, eps = 0.1, 1e-10
    grads = [step[0] for step in make_grads([(7,)], 5)]
    theta0 = torch.zeros(7, dtype=torch.float64)
    trajectory, _ = _steps(lambda ps: memopt.ETAdaGrad(ps, lr=lr, eps=eps, et_order=2), theta0, grads)
    rows, cols = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    previous = theta0
    for g, theta in zip(grads, trajectory):
        padded = torch.cat([g, torch.zeros(2, dtype=torch.float64)]).reshape(3, 3)  # 7 -> 3 x 3
        rows += padded.square().sum(dim=1)
        cols += padded.square().sum(dim=0)
        h = torch.outer(rows, cols).pow(0.25).flatten()[:7]
        torch.testing.assert_close(previous - theta, lr * g / (h + eps), rtol=1e-12, atol=0)
        previous = theta


def test_ema_form_with_bias_correction_closed_form():
    shape, lr, beta2, eps = (4, 6), 0.01, 0.9, 1e-8
    grads = [step[0] for step in make_grads([shape], 5)]
    theta0 = torch.zeros(shape, dtype=torch.float64)
    trajectory, _ = _steps(lambda ps: memopt.ETAdam(ps, lr=lr, betas=(0.0, beta2), eps=eps, et_order=2), theta0, grads)
    rows, cols = torch.zeros(4, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    previous = theta0
    for t, (g, theta) in enumerate(zip(grads, trajectory), start=1):
        rows = beta2 * rows + (1 - beta2) * g.square().sum(dim=1)
        cols = beta2 * cols + (1 - beta2) * g.square().sum(dim=0)
        h = torch.outer(rows, cols).pow(0.25) / math.sqrt(1 - beta2**t)
        torch.testing.assert_close(previous - theta, lr * g / (h + eps), rtol=1e-12, atol=0)
        previous = theta


# ------------------------------------------------------------------------------------------- memory
def test_state_holds_the_sum_of_mode_sizes():
    shapes = [(40, 24), (37,), (6, 5, 4), ()]
    params = make_params(shapes, torch.float32)
    _, optimizer = run(lambda ps: memopt.ETAdaGrad(ps, et_order=3), params, make_grads(shapes, 1, torch.float32))
    for p in optimizer.param_groups[0]["params"]:
        state = optimizer.state[p]
        index = tensor_index(tuple(p.shape), 3)
        numbers = sum(v.numel() for k, v in state.items() if k.startswith("et_sq_"))
        assert numbers == sum(index.flat_modes)
        assert set(state) == {"step", "et_index", *(f"et_sq_{i}" for i in range(index.order))}
    assert tensor_index((40, 24), 3).flat_modes == (5, 8, 24)  # 5 + 8 + 24 numbers instead of 960


def _llama_60m_shapes() -> list[tuple[int, ...]]:
    """LLaMA-60M (hidden 512, intermediate 1376, 8 layers, vocabulary 32000, untied head)."""
    layer = [(512, 512)] * 4 + [(1376, 512), (1376, 512), (512, 1376), (512,), (512,)]
    return [(32000, 512), *layer * 8, (512,), (32000, 512)]


def test_llama_60m_state_is_under_a_thousandth_of_adamw():
    shapes = _llama_60m_shapes()
    model = nn.Module()
    model.weights = nn.ParameterList([nn.Parameter(torch.empty(s, device="meta")) for s in shapes])
    assert sum(p.numel() for p in model.parameters()) == 58_073_600
    rows = {r.name: r.bytes for r in memopt.state_memory_report(model, ["et_adagrad", "adafactor"])}
    assert rows["adamw"] == 8 * 58_073_600 + 8 * len(shapes)
    assert rows["et_adagrad"] == 140_376  # the figure recorded in docs/benchmarks.md
    assert rows["et_adagrad"] <= 1e-3 * rows["adamw"]


# ---------------------------------------------------------------------------------- engine contract
PRESETS = {
    "et_adagrad": lambda ps, **kw: memopt.ETAdaGrad(ps, lr=0.1, weight_decay=0.01, **kw),
    "et_adagrad_natural": lambda ps, **kw: memopt.ETAdaGrad(ps, lr=0.1, et_order=None, **kw),
    "et_adam": lambda ps, **kw: memopt.ETAdam(ps, lr=0.01, weight_decay=0.1, **kw),
    "et_adam_order4": lambda ps, **kw: memopt.ETAdam(ps, lr=0.01, et_order=4, **kw),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_fast_path_equals_reference_path(name, dtype):
    params, grads = make_params(SHAPES, dtype), make_grads(SHAPES, 20, dtype)
    fast, _ = run(lambda ps: PRESETS[name](ps, foreach=True), params, grads)
    reference, _ = run(lambda ps: PRESETS[name](ps, foreach=False), params, grads)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    assert_all_close(fast, reference, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("foreach", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_save_load_continue_is_bit_identical(name, foreach):
    params, grads = make_params(SHAPES, torch.float32), make_grads(SHAPES, 12, torch.float32)
    make = lambda ps: PRESETS[name](ps, foreach=foreach)
    straight, _ = run(make, params, grads)
    halfway, optimizer = run(make, params, grads[:5])
    new_params, new_optimizer = save_and_reload(optimizer, make, halfway)
    for old, new in zip(optimizer.state.values(), new_optimizer.state.values()):
        assert new["et_index"] == old["et_index"] and isinstance(new["et_index"], tuple)
    resumed, _ = run(make, new_params, grads[5:], optimizer=new_optimizer)
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)


def test_mismatched_checkpoint_is_rejected_on_load():
    model = nn.Linear(32, 12)
    optimizer = memopt.build_optimizer(model, "et_adam", et_order=3)
    model(torch.randn(3, 32)).sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()
    order2 = memopt.build_optimizer(nn.Linear(32, 12), "et_adam", et_order=2)
    with pytest.raises(ValueError, match=r"index saved for a parameter of shape \(12, 32\).*et_order=2 gives"):
        order2.load_state_dict({**order2.state_dict(), "state": saved["state"]})
    with pytest.raises(ValueError, match=r"shape \(16, 32\) is .*et_order=3 gives"):
        memopt.build_optimizer(nn.Linear(32, 16), "et_adam", et_order=3).load_state_dict(saved)


def test_bfloat16_parameters_keep_float32_accumulators_and_track_float64():
    shapes = [(16, 8), (8,)]
    grads64 = make_grads(shapes, 20)
    params64 = make_params(shapes)
    params16 = [p.detach().to(torch.bfloat16).requires_grad_() for p in params64]
    make = lambda ps: memopt.ETAdam(ps, lr=1e-2)
    high, _ = run(make, params64, grads64)
    low, optimizer = run(make, params16, [[g.to(torch.bfloat16) for g in step] for step in grads64])
    for a, b in zip(low, high):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.double(), b, rtol=0.02, atol=0.02)
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    assert {state[k].dtype for k in state if k.startswith("et_sq_")} == {torch.float32}


ERRORS = [
    (lambda: memopt.ETAdaGrad([torch.zeros(3, requires_grad=True)], et_order=0), r"Invalid et_order: 0\. et_order"),
    (lambda: memopt.ETAdaGrad([torch.zeros(3, requires_grad=True)], et_order=2.5), r"Invalid et_order: 2\.5"),
    (lambda: memopt.ETAdam([torch.zeros(3, requires_grad=True)], et_order="3"), r"Invalid et_order: '3'.*or None"),
    (lambda: memopt.ETAdam([torch.zeros(3, requires_grad=True)], et_order=True), r"Invalid et_order: True"),
    (
        lambda: memopt.ETAdam([torch.zeros(3, requires_grad=True)], betas=(0.9, 1.0)),
        r"bias_correction=True with betas\[1\] \(beta2\) = 1.*Set bias_correction=False",
    ),
    (lambda: memopt.ETAdam([torch.zeros(3, requires_grad=True)], lr=-1.0), r"Invalid lr: -1\.0"),
    (lambda: memopt.build_optimizer(nn.Linear(2, 2), "et_adam", et_ordr=2), r"no hyperparameter 'et_ordr'.*et_order"),
]


@pytest.mark.parametrize(("make", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_invalid_hyperparameters_raise_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(("name", "lr"), [("et_adagrad", 0.5), ("et_adam", 0.05)])
def test_registry_builds_one_group_for_every_parameter_and_lowers_a_loss(name, lr):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 8), nn.LayerNorm(8), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    optimizer = memopt.build_optimizer(model, name, lr=lr)
    (group,) = optimizer.param_groups
    assert group["second_moment_type"] == "extreme_tensoring" and group["et_order"] == 3
    x = torch.randint(0, 20, (32,))
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
