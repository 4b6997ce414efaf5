"""8-bit block-wise (de)quantization with Triton: the same signatures and bit-identical results as
:func:`memopt.state.quantization.quantize_blockwise` and :func:`~memopt.state.quantization.dequantize_blockwise`
(Dettmers et al., "8-bit Optimizers via Block-wise Quantization", arXiv 2110.02861), in one pass each.

:class:`memopt.state.formats.Blockwise8bit` calls :func:`codec` to pick this module for tensors the kernels
take (:func:`memopt.kernels.triton.applies`) and :mod:`memopt.state.quantization` otherwise.
"""

from __future__ import annotations

import functools
import sys
from types import ModuleType

import torch

from memopt.kernels import triton as kernel_set
from memopt.state import quantization, sharding

#: elements per program of the element-wise dequantization
_ELEMENTS = 1024


def codec(codes: torch.Tensor) -> ModuleType:
    """The module that (de)quantizes ``codes``: this one where the Triton kernels take them, else
    :mod:`memopt.state.quantization` (the torch path)."""
    return sys.modules[__name__] if kernel_set.applies(codes) else quantization


@functools.cache
def tables(signed: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The map, the nearest-code lookup table and the midpoints of ``signed``'s map, on ``device``."""
    return (
        quantization.dynamic_map(signed).to(device),
        quantization.nearest_code_table(signed).to(device),
        quantization._midpoints(signed).to(device),
    )


def table_constants() -> dict[str, int]:
    """The lookup table's key layout (constexpr arguments of the kernels that requantize)."""
    return {
        "MIN_EXPONENT": quantization._MIN_EXPONENT,
        "MANTISSA": quantization._MANTISSA_BITS,
        "EXPONENT": quantization._EXPONENT_BITS,
    }


def block_lanes(block_size: int) -> int:
    """Lanes of a program that covers one block (a power of two)."""
    return 1 << max(block_size - 1, 0).bit_length()


def quantize_blockwise(
    x: torch.Tensor,
    *,
    signed: bool,
    block_size: int = quantization.DEFAULT_BLOCK_SIZE,
    out: torch.Tensor | None = None,
    start: int = 0,
    absmax: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`memopt.state.quantization.quantize_blockwise` in one kernel: one program per block."""
    flat = x.detach().reshape(-1).to(torch.float32).contiguous()
    n = flat.numel()
    window = sharding.blocks_overlapped(start, n, block_size)
    blocks = window.stop - window.start
    given = absmax is not None
    maxima = absmax.contiguous() if given else torch.empty(blocks, dtype=torch.float32, device=flat.device)
    contiguous_out = out is not None and out.is_contiguous()
    target = out if contiguous_out else torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    if blocks and kernel_set.has_data(flat):
        _, table, midpoints = tables(signed, flat.device)
        kernel_set.kernels().quantize_kernel[(blocks,)](
            flat, target, maxima, n, start, block_size, window.start, table, midpoints,
            COMPUTE_MAX=not given, BLOCK=block_lanes(block_size), **table_constants(), **kernel_set.LAUNCH,
        )  # fmt: skip
    if out is not None and target is not out:
        out.copy_(target)
        target = out
    return target, maxima


def dequantize_blockwise(
    codes: torch.Tensor,
    absmax: torch.Tensor,
    *,
    signed: bool,
    block_size: int = quantization.DEFAULT_BLOCK_SIZE,
    start: int = 0,
) -> torch.Tensor:
    """:func:`memopt.state.quantization.dequantize_blockwise` in one element-wise kernel."""
    flat = codes.reshape(-1).contiguous()
    n = flat.numel()
    values = torch.empty(codes.shape, dtype=torch.float32, device=codes.device)
    if n and kernel_set.has_data(flat):
        code_map = tables(signed, flat.device)[0]
        kernel_set.kernels().dequantize_kernel[(-(-n // _ELEMENTS),)](
            flat, absmax.contiguous(), values, n, start, block_size, start // block_size, code_map,
            BLOCK=_ELEMENTS, **kernel_set.LAUNCH,
        )  # fmt: skip
    return values
