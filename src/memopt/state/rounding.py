"""Stochastic rounding from float32 to bfloat16.

A bfloat16 is the upper 16 bits of a float32. Rounding ``x`` to nearest loses every update smaller than half
a bfloat16 ulp of ``x``; rounding stochastically keeps them in expectation: ``x`` rounds up to the next
bfloat16 with probability equal to its distance from the lower one, in units of the gap, so
``E[round(x)] = x`` (Gupta et al., 2015, "Deep Learning with Limited Numerical Precision").

Implementation: add a uniform random integer in ``[0, 2**16)`` to the float32 bit pattern and clear the low
16 bits. Written here because torch has no stochastic-rounding cast; the bit trick is a few tensor ops.
Values that would round past the largest finite bfloat16 become infinity, as with any overflow; NaN stays
NaN.
"""

from __future__ import annotations

import torch

_LOW_BITS = 1 << 16
_HIGH_MASK = -_LOW_BITS  # 0xFFFF0000 as a signed 32-bit integer


def rounding_generator(device: torch.device, index: int, step: int, offset: int = 0) -> torch.Generator:
    """The generator for parameter ``index`` at ``step``: seeded by both, so that the rounding is
    reproducible and a resumed run draws exactly the noise the uninterrupted one would have drawn.

    ``offset`` (the first row a rank holds of a sharded parameter) gives each shard its own noise; the
    rounding stays unbiased, but a sharded run draws other noise than an unsharded one."""
    return torch.Generator(device=device).manual_seed(((index << 32) ^ step ^ (offset << 40)) % (1 << 63))


def stochastic_round_to_bfloat16(
    value: torch.Tensor, generator: torch.Generator | None = None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``value`` rounded stochastically to bfloat16 (unbiased: ``E[result] = value``).

    Args:
        value: the tensor to round; converted to float32 first (exact for 16-bit inputs).
        generator: the source of randomness, on ``value``'s device; None uses torch's default generator.
            A seeded generator makes the rounding reproducible.
        out: an optional bfloat16 tensor of ``value``'s shape to write into.
    """
    bits = value.to(torch.float32).contiguous().view(torch.int32)
    noise = torch.randint(0, _LOW_BITS, bits.shape, dtype=torch.int32, device=bits.device, generator=generator)
    finite = torch.isfinite(value)
    rounded = torch.where(finite, (bits + noise) & _HIGH_MASK, bits).view(torch.float32)
    if out is None:
        return rounded.to(torch.bfloat16)
    if out.dtype != torch.bfloat16 or out.shape != value.shape:
        raise ValueError(
            f"out: expected a bfloat16 tensor of shape {tuple(value.shape)}, got {out.dtype} {tuple(out.shape)}"
        )
    return out.copy_(rounded)
