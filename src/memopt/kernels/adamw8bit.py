"""The fused CPU kernel for AdamW with 8-bit block-wise moments (``adamw8bit.c``), and when it applies.

The engine's reference path computes the same update in several torch passes (dequantize both moments,
update them, requantize, update the parameter). This kernel does it in one pass per block of
``quant_block_size`` elements, reading one byte per moment instead of writing float32 temporaries. The
engine's dispatch registry (:mod:`memopt.optim.dispatch`) gives it a parameter when the group is exactly
AdamW and :func:`eligible` holds (both moments stored as 8-bit codes, :mod:`memopt.state.formats`);
everything else keeps its usual path.
"""

from __future__ import annotations

import ctypes
import math

import torch

from memopt.estimators.base import ParamStep
from memopt.kernels import quant8
from memopt.kernels.build import bind
from memopt.state import sharding
from memopt.state.formats import Blockwise8bit, format_of

_FLOAT_P = ctypes.POINTER(ctypes.c_float)
_BYTE_P = ctypes.POINTER(ctypes.c_uint8)


def _library() -> ctypes.CDLL | None:
    return bind("adamw8bit", {"memopt_adamw8bit_step": (ctypes.c_int, [
            _FLOAT_P, _FLOAT_P, _BYTE_P, _FLOAT_P, _BYTE_P, _FLOAT_P, ctypes.c_int64, ctypes.c_int64,
            _FLOAT_P, _FLOAT_P, _FLOAT_P, _FLOAT_P,
            *[ctypes.c_float] * 7, ctypes.c_int,
    ])})  # fmt: skip


def available() -> bool:
    """Whether the kernel is built and loaded (see :mod:`memopt.kernels.build`)."""
    return _library() is not None


def _moment_formats(state) -> tuple[Blockwise8bit, Blockwise8bit] | None:
    """The formats of both moments when they are 8-bit codes (signed first moment, unsigned second, one
    block size), else None."""
    if state.get("exp_avg") is None or state.get("exp_avg_sq") is None:
        return None
    m, v = format_of(state, "exp_avg"), format_of(state, "exp_avg_sq")
    if not (isinstance(m, Blockwise8bit) and isinstance(v, Blockwise8bit)):
        return None
    if not (m.signed and not v.signed and m.block_size == v.block_size):
        return None
    return m, v


def eligible(param: torch.Tensor, grad: torch.Tensor, state: dict) -> bool:
    """Whether ``param`` is a contiguous float32 CPU tensor whose moments are 8-bit codes with one block
    size, cut into blocks from the local piece's first element (a whole tensor, or a shard of whole blocks
    that holds its own maxima)."""
    if not (
        param.device.type == "cpu"
        and param.dtype == torch.float32
        and grad.dtype == torch.float32
        and param.is_contiguous()
    ):
        return False
    moments = _moment_formats(state)
    if moments is None or not available():
        return False
    return all(fmt.quantized_alone(state[key]) for fmt, key in zip(moments, ("exp_avg", "exp_avg_sq")))


def _ptr(tensor: torch.Tensor, kind):
    return ctypes.cast(tensor.data_ptr(), kind)


def step(steps: list[ParamStep], group: dict) -> None:
    """One AdamW step for ``steps`` (gradients already processed: maximize and coupled decay applied)."""
    # fake tensors (the memory planner's estimate) have no data; the kernel allocates no tensors, so there
    # is nothing to do or to count for them
    steps = [ps for ps in steps if ps.param.untyped_storage().device.type != "meta"]
    if not steps:
        return
    library = _library()
    signed_map, signed_mid = quant8.code_values(True), quant8.code_midpoints(True)
    unsigned_map, unsigned_mid = quant8.code_values(False), quant8.code_midpoints(False)
    beta1, beta2 = group["betas"]
    lr, wd = group["lr"], group["weight_decay"]
    decay = 1 - lr * wd if wd != 0 and group["decoupled_weight_decay"] else 1.0
    threads = torch.get_num_threads()
    for ps in steps:
        state = ps.state
        grad = ps.grad.contiguous()
        m_format, v_format = _moment_formats(state)
        m, v = state["exp_avg"], state["exp_avg_sq"]  # QuantizedState entries
        failed = library.memopt_adamw8bit_step(
            _ptr(ps.param, _FLOAT_P), _ptr(grad, _FLOAT_P),
            _ptr(sharding.local(m.codes), _BYTE_P), _ptr(m_format.maxima(m), _FLOAT_P),
            _ptr(sharding.local(v.codes), _BYTE_P), _ptr(v_format.maxima(v), _FLOAT_P),
            ps.param.numel(), m_format.block_size,
            _ptr(signed_map, _FLOAT_P), _ptr(unsigned_map, _FLOAT_P),
            _ptr(signed_mid, _FLOAT_P), _ptr(unsigned_mid, _FLOAT_P),
            1 - beta1, beta2, 1 - beta2, group["eps"], decay,
            -lr / (1 - beta1**ps.step), math.sqrt(1 - beta2**ps.step), threads,
        )  # fmt: skip
        if failed:
            raise MemoryError(f"the 8-bit AdamW kernel could not allocate its block buffers for {ps.name}")
