"""The one-pass Subset-Norm C kernel equals the engine's reference path, and takes only what it computes exactly."""

from __future__ import annotations

import shutil

import pytest
import torch

import memopt
from memopt.kernels import subset_norm
from memopt.optim import dispatch
from memopt.state import sharding
from memopt.state.formats import Blockwise8bit, QuantizedState

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler to build the kernel"
)

PRESETS = {"adamw_sn": memopt.AdamWSN, "rmsprop_sn": memopt.RMSPropSN, "adagrad_sn": memopt.AdaGradSN}


def _run(preset, shape, *, kernel: bool, steps=6, threads=None, **hparams):
    """``steps`` steps on one seeded parameter with seeded gradients (the same for both paths); the
    parameter and its state."""
    generator = torch.Generator().manual_seed(0)
    param = torch.randn(shape, generator=generator).requires_grad_()
    optimizer = PRESETS[preset]([param], **{"lr": 1e-2, **hparams})
    optimizer.param_groups[0]["foreach"] = None if kernel else False
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        for step in range(steps):
            param.grad = torch.randn(shape, generator=generator) * 0.1 + 0.01
            optimizer.param_groups[0]["lr"] = 1e-2 * (1 + step % 3)  # a changing lr, as a scheduler would set
            optimizer.step()
    finally:
        torch.set_num_threads(previous)
    return param.detach(), optimizer.state[param]


def test_kernel_is_built_where_a_compiler_exists():
    assert subset_norm.available()


CASES = [
    # (preset, shape, hparams): row subsets (tall), column subsets (wide), odd shapes, chunks, vectors, scalars
    ("adamw_sn", (300, 70), {}),
    ("adamw_sn", (70, 301), {"weight_decay": 0.1}),
    ("adamw_sn", (37, 1029), {"weight_decay": 0.1, "weight_decay_placement": "after_update"}),
    ("adamw_sn", (2100, 13), {"eps_placement": "before_bias_correction", "eps": 1e-3, "lr_decay": 0.1}),
    ("adamw_sn", (9, 3000), {"betas": (0.3, 0.95), "maximize": True}),  # lerp's large-weight form
    ("adamw_sn", (8, 5, 7), {"decoupled_weight_decay": False, "weight_decay": 0.05}),  # coupled decay
    ("adamw_sn", (1000,), {}),
    ("adamw_sn", (), {}),
    ("adamw_sn", (64, 1000), {"subset_size": 96}),  # chunks of 80
    ("adamw_sn", (128, 127), {"subset_size": -2}),
    ("adamw_sn", (5, 3), {"subset_size": 1000, "weight_decay": 0.2}),  # one subset: AdaGrad-Norm-like
    ("rmsprop_sn", (300, 70), {"weight_decay": 0.1}),
    ("rmsprop_sn", (33, 2000), {}),
    ("rmsprop_sn", (77,), {"eps": 1e-2}),
    ("adagrad_sn", (300, 70), {"weight_decay": 0.1}),
    ("adagrad_sn", (70, 301), {}),
    ("adagrad_sn", (65, 65), {"subset_size": 5, "betas": (0.0, 1.0)}),  # no momentum buffer
]


@pytest.mark.parametrize(("preset", "shape", "hparams"), CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_kernel_equals_the_reference_path(preset, shape, hparams, monkeypatch):
    calls = []
    original = subset_norm.step
    monkeypatch.setattr(subset_norm, "step", lambda *args: (calls.append(1), original(*args)))
    fast, fast_state = _run(preset, shape, kernel=True, **hparams)
    slow, slow_state = _run(preset, shape, kernel=False, **hparams)
    assert len(calls) == 6  # every step went through the kernel
    # The momentum is the same float32 operations (torch's lerp with one fused multiply-add): bit-identical.
    if "exp_avg" in slow_state:
        assert torch.equal(fast_state["exp_avg"], slow_state["exp_avg"])
    # The subset sums of squares differ by the rounding of the summation (the kernel sums in double, torch
    # in float32 in its own order): a few ulp of the accumulator, relative 1e-6 at most over these steps.
    torch.testing.assert_close(fast_state["subset_sq"], slow_state["subset_sq"], rtol=1e-6, atol=0)
    # The parameters: the denominators' relative 1e-6 moves each update by as little, against parameters
    # of order 1 and updates of order lr = 1e-2: within a few float32 ulp of the parameter.
    torch.testing.assert_close(fast, slow, rtol=4e-7, atol=2.4e-7)


EIGHT_BIT_CASES = [
    ("adamw_sn", (300, 70), {"state_storage": "8bit"}),  # row subsets; blocks span rows
    ("adamw_sn", (70, 301), {"state_storage": "8bit", "quant_block_size": 128, "weight_decay": 0.1}),  # columns
    ("adagrad_sn", (65, 130), {"state_storage": "8bit"}),
    ("adamw_sn", (9, 3000), {"state_storage": "8bit", "betas": (0.3, 0.95), "maximize": True}),  # large-weight lerp
    ("adamw_sn", (37, 1029), {"state_storage": "8bit", "weight_decay": 0.1, "weight_decay_placement": "after_update"}),
    ("adamw_sn", (64, 1000), {"state_storage": "8bit", "subset_size": 96, "quant_block_size": 64}),
    ("adamw_sn", (33, 2000), {"state_storage": "8bit", "quant_block_size": 2048}),  # a block longer than a row
    ("adamw_sn", (5000,), {"state_storage": "8bit"}),  # a vector: one subset, a partial last block
]


@pytest.mark.parametrize(
    ("preset", "shape", "hparams"), EIGHT_BIT_CASES, ids=[c[0] + str(c[1]) for c in EIGHT_BIT_CASES]
)
def test_kernel_with_8bit_momentum_equals_the_reference_path(preset, shape, hparams, monkeypatch):
    # the kernel reads the momentum's codes, updates it and writes its codes, never a float32 copy (no load of
    # the state); the reference path dequantizes, updates and requantizes: the same float32 momentum, hence
    # the same codes and maxima
    calls, loads = [], []
    original, original_load = subset_norm.step, Blockwise8bit.load
    monkeypatch.setattr(subset_norm, "step", lambda *args: (calls.append(1), original(*args)))
    monkeypatch.setattr(Blockwise8bit, "load", lambda *args: (loads.append(1), original_load(*args))[1])
    fast, fast_state = _run(preset, shape, kernel=True, **hparams)
    assert loads == []
    slow, slow_state = _run(preset, shape, kernel=False, **hparams)
    assert len(calls) == 6 and len(loads) == 6
    assert isinstance(fast_state["exp_avg"], QuantizedState)
    assert torch.equal(fast_state["exp_avg"].codes, slow_state["exp_avg"].codes)
    assert torch.equal(fast_state["exp_avg"].maxima, slow_state["exp_avg"].maxima)
    torch.testing.assert_close(fast_state["subset_sq"], slow_state["subset_sq"], rtol=1e-6, atol=0)
    torch.testing.assert_close(fast, slow, rtol=4e-7, atol=2.4e-7)


@pytest.mark.parametrize("storage", ["float32", "8bit"])
def test_kernel_results_do_not_depend_on_the_thread_count(storage):
    options = {"weight_decay": 0.1} | ({"state_storage": "8bit"} if storage == "8bit" else {})
    for shape in ((257, 300), (300, 257)):  # column subsets and row subsets
        one, one_state = _run("adamw_sn", shape, kernel=True, threads=1, **options)
        two, two_state = _run("adamw_sn", shape, kernel=True, threads=2, **options)
        assert torch.equal(one, two)
        assert torch.equal(one_state["subset_sq"], two_state["subset_sq"])
        if storage == "8bit":
            assert torch.equal(one_state["exp_avg"].codes, two_state["exp_avg"].codes)
            assert torch.equal(one_state["exp_avg"].maxima, two_state["exp_avg"].maxima)
        else:
            assert torch.equal(one_state["exp_avg"], two_state["exp_avg"])


def _chosen(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> str | None:
    group = optimizer.param_groups[0]
    momentum, second = memopt.optim.engine.resolve_estimators(group)
    chosen = dispatch.choose(dispatch.candidates(group, momentum, second), param, param.grad, optimizer.state[param])
    return None if chosen is None else chosen.name


@pytest.mark.parametrize(
    ("param", "hparams", "expected"),
    [
        (torch.randn(64, 128), {}, "subset_norm_kernel"),
        (torch.randn(128, 64).t(), {}, None),  # not contiguous: the reference path
        (torch.randn(64, 128, dtype=torch.bfloat16), {}, None),
        (torch.randn(64, 128, dtype=torch.float64), {}, "foreach"),
        (torch.randn(64, 128), {"state_storage": "8bit"}, "subset_norm_kernel"),  # 8-bit momentum, loaded around it
        (torch.randn(64, 128), {"state_storage": "4bit"}, None),
        (torch.randn(64, 128), {"state_storage": "bfloat16"}, None),
        (torch.randn(64, 128), {"subset_size": None}, "torch_fused_adam"),  # coordinate-wise: AdamW
        (torch.randn(64, 128), {"update_momentum": 0.9}, None),
    ],
)
def test_the_kernel_takes_only_what_it_computes_exactly(param, hparams, expected):
    param.requires_grad_()
    optimizer = memopt.AdamWSN([param], **hparams)
    param.grad = torch.ones_like(param)
    optimizer.step()
    assert _chosen(optimizer, param) == expected
    assert torch.isfinite(param).all()


def test_other_momentum_kinds_are_not_taken():
    param = torch.randn(64, 128, requires_grad=True)
    optimizer = memopt.AdamWSN([param], momentum_type="heavy_ball", momentum=0.9)
    param.grad = torch.ones_like(param)
    optimizer.step()
    assert _chosen(optimizer, param) == "foreach"


def test_the_local_piece_of_a_sharded_parameter_is_refused():
    # a sharded parameter's state reaches dispatch as a LocalState view of its DTensor entries; its subsets may
    # need other ranks' sums (columns, chunks), so the foreach path keeps it
    param = torch.randn(64, 128, requires_grad=True)
    optimizer = memopt.AdamWSN([param])
    param.grad = torch.ones_like(param)
    optimizer.step()
    state = optimizer.state[param]
    assert subset_norm.eligible(param, param.grad, state)
    assert not subset_norm.eligible(param, param.grad, sharding.LocalState(state))
