"""The fused C kernel for 8-bit AdamW equals the engine's torch path, and memopt falls back cleanly without it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import memopt
from memopt.kernels import adamw8bit
from memopt.state import formats

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler to build the kernel"
)


def _run(shape, *, kernel: bool, steps=12, block=256, threads=None, **hparams):
    generator = torch.Generator().manual_seed(0)
    param = (torch.randn(shape, generator=generator) * 0.1).requires_grad_()
    optimizer = memopt.AdamW8bit([param], quant_block_size=block, **hparams)
    optimizer.param_groups[0]["foreach"] = None if kernel else False
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    # the reference: the engine's torch path, with torch's load and store of the 8-bit states too
    load_store = formats.register_8bit_kernel(formats._8BIT_KERNEL if kernel else None)
    try:
        for step in range(steps):
            param.grad = torch.randn(shape, generator=generator) * 0.01 + 0.002
            optimizer.param_groups[0]["lr"] = 1e-3 * (1 + step % 3)  # a changing lr, as a scheduler would set
            optimizer.step()
    finally:
        torch.set_num_threads(previous)
        formats.register_8bit_kernel(load_store)
    return param.detach(), optimizer.state[param]


def test_kernel_is_built_where_a_compiler_exists():
    assert adamw8bit.available()


@pytest.mark.parametrize("make", [memopt.AdamW8bit, lambda ps: memopt.build_optimizer(nn.Linear(128, 64), "adamw8bit")])
def test_the_engine_hands_8_bit_adamw_parameters_to_the_kernel(make, monkeypatch):
    calls = []
    original = adamw8bit.step
    monkeypatch.setattr(adamw8bit, "step", lambda steps, group: (calls.append(len(steps)), original(steps, group)))
    optimizer = make([torch.zeros(128, 64, requires_grad=True)])
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = torch.ones_like(param)
    optimizer.step()
    optimizer.step()
    # every tensor of 4096 elements or more, in both steps (a 64-element bias keeps float32 moments)
    assert calls == [1, 1]


@pytest.mark.parametrize(
    ("shape", "block", "hparams"),
    [
        ((64, 1000), 256, {}),
        ((300, 70), 256, {"weight_decay": 0.1}),  # 21000 elements: the last block holds 8
        ((4096,), 64, {"betas": (0.8, 0.95), "eps": 1e-6}),
        ((50, 99), 2048, {"maximize": True, "weight_decay": 0.0}),
    ],
)
def test_kernel_equals_the_torch_path(shape, block, hparams):
    fast, fast_state = _run(shape, kernel=True, block=block, **hparams)
    slow, slow_state = _run(shape, kernel=False, block=block, **hparams)
    assert fast_state["exp_avg"].codes.dtype == torch.uint8
    for key in ("exp_avg", "exp_avg_sq"):
        # the states stay identical: codes and block maxima
        assert torch.equal(fast_state[key].codes, slow_state[key].codes), key
        assert torch.equal(fast_state[key].maxima, slow_state[key].maxima), key
    # parameters: the same operations in the same order, but the kernel fuses the last multiply-add, so a
    # parameter may differ by an ulp (of the largest parameter, about 6e-8 here)
    torch.testing.assert_close(fast, slow, rtol=3e-7, atol=1e-7)


def test_kernel_results_do_not_depend_on_the_thread_count():
    one, one_state = _run((257, 300), kernel=True, threads=1)
    two, two_state = _run((257, 300), kernel=True, threads=2)
    assert torch.equal(one, two)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(one_state[key].codes, two_state[key].codes)
        assert torch.equal(one_state[key].maxima, two_state[key].maxima)


def test_parameters_the_kernel_cannot_take_use_the_torch_path():
    matrix = torch.randn(64, 128)
    for param in (matrix.t().requires_grad_(), torch.randn(64, 128, dtype=torch.bfloat16).requires_grad_()):
        optimizer = memopt.AdamW8bit([param])
        param.grad = torch.ones_like(param)
        optimizer.step()
        assert not adamw8bit.eligible(param, param.grad, optimizer.state[param])
        assert optimizer.state[param]["exp_avg"].codes.dtype == torch.uint8
        assert torch.isfinite(param.float()).all()


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


_STEP = """
    import warnings, torch, memopt
    from memopt.kernels import adamw8bit
    warnings.simplefilter("always")
    param = torch.zeros(64, 128, requires_grad=True)
    optimizer = memopt.AdamW8bit([param])
    param.grad = torch.ones_like(param)
    optimizer.step()
    print("available", adamw8bit.available(), "moved", bool((param != 0).all()))
"""


def test_kernels_can_be_turned_off():
    result = _python(_STEP, MEMOPT_KERNELS="0")
    assert result.returncode == 0, result.stderr
    assert "available False moved True" in result.stdout


def test_a_failing_compiler_warns_and_falls_back(tmp_path):
    result = _python(_STEP, CC="false", MEMOPT_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "available False moved True" in result.stdout
    assert "could not build the fused kernel adamw8bit" in result.stderr
    assert not list((tmp_path / "kernels").glob("*.so"))  # no half-written library left behind
