"""The C kernel for block-wise 8-bit load and store of optimizer state (``quant8.c``), and when it applies.

:class:`memopt.state.formats.Blockwise8bit` dequantizes and requantizes its states with torch
(:mod:`memopt.state.quantization`), a dozen passes over memory per store. This kernel does the same in one
pass per block of ``block_size`` elements: a store computes each block's absolute maximum and the nearest
dynamic-map code of every element (from the value, see ``quant8.h``), a load multiplies each code's map
value by its block's maximum. Codes and maxima equal the torch path's bit for bit (tests/kernels).
It is registered with the formats by :mod:`memopt.optim.dispatch` (:data:`KERNEL`), so every optimizer
with ``state_storage="8bit"`` uses it for contiguous float32 CPU states quantized on their own (a whole
tensor, or a shard that holds its own maxima); other devices, dtypes and layouts keep the torch path.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from memopt.kernels.build import bind
from memopt.state import quantization
from memopt.state.formats import Blockwise8bit

_PTR = ctypes.c_void_p
_INT = ctypes.c_int


def _library() -> ctypes.CDLL | None:
    return bind("quant8", {
        "memopt_q8_codes": (None, [_PTR, _PTR, ctypes.c_int64, _PTR, _INT, _INT]),
        "memopt_q8_quantize": (None, [_PTR, _PTR, _PTR, ctypes.c_int64, ctypes.c_int64, _PTR, _INT, _INT]),
        "memopt_q8_dequantize": (None, [_PTR, _PTR, _PTR, ctypes.c_int64, ctypes.c_int64, _PTR, _INT]),
    })  # fmt: skip


def available() -> bool:
    """Whether the kernel is built and loaded (see :mod:`memopt.kernels.build`)."""
    return _library() is not None


@functools.cache
def code_values(signed: bool) -> torch.Tensor:
    """The dynamic map's 256 code values (float32, contiguous), as the C kernels read them."""
    return quantization.dynamic_map(signed).contiguous()


@functools.cache
def code_midpoints(signed: bool) -> torch.Tensor:
    """The 255 midpoints between consecutive code values, then +inf (float32, contiguous)."""
    return quantization._midpoints(signed).contiguous()


#: the search paths of :func:`nearest_codes` (``quant8.c``'s ``memopt_q8_codes``)
PATHS = {"one_element": 0, "exact_vector": 1, "fast_vector": 2}


def nearest_codes(
    normalized: torch.Tensor, signed: bool, *, path: str = "fast_vector", out: torch.Tensor | None = None
) -> torch.Tensor:
    """The kernel's nearest codes (uint8, flat) of float32 values in [-1, 1], as
    :func:`memopt.state.quantization.nearest_codes` computes them, by one of its search paths (:data:`PATHS`):
    the one-element search, the 8-lane search that compares with the exact midpoint, or the 8-lane decision
    from positions that the quantize kernels run (the exact comparison only where a value is near a midpoint).
    ``out``: a contiguous uint8 CPU tensor of as many elements to write the codes into."""
    if path not in PATHS:
        raise ValueError(f"nearest_codes: path must be one of {sorted(PATHS)}, got {path!r}")
    values = normalized.detach().reshape(-1).to(torch.float32).contiguous()
    if out is None:
        out = torch.zeros(values.numel(), dtype=torch.uint8)
    elif not (out.dtype == torch.uint8 and out.device.type == "cpu" and out.is_contiguous()
              and out.numel() == values.numel()):  # fmt: skip
        raise ValueError(
            f"nearest_codes: out must be a contiguous uint8 CPU tensor of {values.numel()} elements, got "
            f"{out.dtype} {tuple(out.shape)} on {out.device}"
        )
    _library().memopt_q8_codes(
        values.data_ptr(), out.data_ptr(), values.numel(), code_midpoints(signed).data_ptr(), int(signed), PATHS[path]
    )
    return out


def _applies(*tensors: torch.Tensor) -> bool:
    """Contiguous CPU tensors outside a compiled graph, the kernel built."""
    return (
        not torch.compiler.is_compiling()
        and all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)
        and available()
    )


def _fake(tensor: torch.Tensor) -> bool:
    """A fake tensor (the memory planner's estimate): no data to read or write, only allocations to count."""
    return tensor.untyped_storage().device.type == "meta"


class CKernel:
    """:class:`memopt.state.formats.Blockwise8bitKernel` on float32 CPU tensors through ``quant8.c``."""

    def load(self, codes: torch.Tensor, maxima: torch.Tensor, fmt: Blockwise8bit) -> torch.Tensor | None:
        if not (codes.dtype == torch.uint8 and maxima.dtype == torch.float32 and _applies(codes, maxima)):
            return None
        if maxima.numel() != quantization.num_blocks(codes.numel(), fmt.block_size):
            return None
        out = torch.empty(codes.shape, dtype=torch.float32)  # the one tensor a load allocates
        if _fake(codes):
            return out
        _library().memopt_q8_dequantize(
            codes.data_ptr(), maxima.data_ptr(), out.data_ptr(), codes.numel(), fmt.block_size,
            code_values(fmt.signed).data_ptr(), torch.get_num_threads(),
        )  # fmt: skip
        return out

    def store(self, codes: torch.Tensor, maxima: torch.Tensor, fmt: Blockwise8bit, value: torch.Tensor) -> bool:
        value = value.detach()
        if not (
            value.dtype == torch.float32
            and codes.dtype == torch.uint8
            and maxima.dtype == torch.float32
            and value.numel() == codes.numel()
            and maxima.numel() == quantization.num_blocks(codes.numel(), fmt.block_size)
            and _applies(value, codes, maxima)
        ):
            return False
        if _fake(codes) or _fake(value):
            return True  # a store allocates nothing
        _library().memopt_q8_quantize(
            value.data_ptr(), codes.data_ptr(), maxima.data_ptr(), codes.numel(), fmt.block_size,
            code_midpoints(fmt.signed).data_ptr(), int(fmt.signed), torch.get_num_threads(),
        )  # fmt: skip
        return True


#: the kernel :mod:`memopt.optim.dispatch` registers with :func:`memopt.state.formats.register_8bit_kernel`
KERNEL = CKernel()
