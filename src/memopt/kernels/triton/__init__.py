"""Triton GPU kernels for memopt's compressed-state updates, and the functions that launch them.

* :mod:`.blockwise`: 8-bit block-wise (de)quantization of any state (``state_storage="8bit"``), used by
  :class:`memopt.state.formats.Blockwise8bit` on CUDA tensors;
* the kernels of one AdamW step over 8-bit block-wise moments and of the Subset-Norm step (momentum, subset
  sums of squares, update), which :mod:`memopt.kernels.triton_steps` launches for the engine's dispatch
  registry (:mod:`memopt.optim.dispatch`) on CUDA parameters.

This package sits with :mod:`memopt.state` in the layers (the state formats call :mod:`.blockwise`); the
engine-facing part, which reads estimators' parameter steps, is :mod:`memopt.kernels.triton_steps`.

Triton is optional: nothing here imports it until a kernel is launched, and :func:`available` says whether
it can be. With ``TRITON_INTERPRET=1`` in the environment when Triton is first imported, Triton runs every
kernel in its interpreter (numpy on the host) and the kernels take CPU tensors too: this is how the tests
check them, bit for bit, on machines without a GPU (``tests/kernels/test_triton_kernels.py``).
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

#: launch options of every kernel: no contraction of a multiply and an add into one fused multiply-add beyond
#: the kernels' explicit ``tl.fma`` (those that torch's kernels compute), so that values round as torch's do
LAUNCH = {"enable_fp_fusion": False}

#: the devices whose tensors the kernels take: CUDA, and the CPU under Triton's interpreter
DEVICES: frozenset[str] = frozenset({"cuda", "cpu"} if os.environ.get("TRITON_INTERPRET") == "1" else {"cuda"})


@functools.cache
def available() -> bool:
    """Whether Triton can be imported (the kernels can be loaded); asked only for tensors on a kernel device."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def applies(*tensors: torch.Tensor) -> bool:
    """Whether the kernels take ``tensors``: Triton is installed and all of them are on one device of
    :data:`DEVICES` (fake tensors included: see :func:`has_data`)."""
    devices = {t.device.type for t in tensors}
    return len(devices) == 1 and devices <= DEVICES and available()


def has_data(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` has data a kernel can read: fake tensors (the memory planner's estimate, storage on
    the meta device) have none, so the launchers allocate their outputs and launch nothing for them."""
    return tensor.untyped_storage().device.type != "meta"


def kernels() -> ModuleType:
    """The module of ``@triton.jit`` kernels (imported, with Triton, on first use)."""
    return importlib.import_module("memopt.kernels.triton._source")
