"""8-bit block-wise dynamic quantization of optimizer state.

Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise Quantization", ICLR 2022
(arXiv 2110.02861). A state tensor is read as a flat sequence cut into blocks of ``block_size``
consecutive elements; each block stores its absolute maximum ``N_b`` (float32) and each element the
uint8 index of the code value nearest to ``x / N_b`` in a non-linear *dynamic* map:

* **signed map** (for states of either sign, e.g. momentum): for each decade ``i = 0..6`` the ``2^i``
  midpoints of ``2^i`` equal bins of ``[0.1, 1]``, scaled by ``10^(i-6)``, their negatives, 0 and +1:
  256 values, smallest magnitude 5.5e-7, top-decade resolution 0.9/64;
* **unsigned map** (for non-negative states, e.g. Adam's second moment): the sign bit becomes a fraction
  bit, so decade ``i`` has ``2^(i+1)`` values; with 0 and 1: 256 values in ``[0, 1]``.

Dequantization is ``x_hat = map[code] * N_b``. A block's largest positive value is stored exactly. With the
signed map a nonzero value never changes sign: a code of the wrong sign is moved one step toward zero.
The maps and the rounding rule follow the paper's description (and bitsandbytes' documented behaviour);
the code here is our own.
"""

from __future__ import annotations

import functools

import torch

DEFAULT_BLOCK_SIZE = 256
#: tensors with fewer elements keep float32 state (they save little and are mostly biases and norms)
MIN_QUANTIZED_NUMEL = 4096


def _decade_midpoints(decade: int, count: int) -> torch.Tensor:
    width = 0.9 / count
    return (0.1 + width * (torch.arange(count, dtype=torch.float64) + 0.5)) * 10.0 ** (decade - 6)


@functools.cache
def dynamic_map(signed: bool) -> torch.Tensor:
    """The 256 sorted code values (float32) of the signed or unsigned dynamic map."""
    if signed:
        positive = torch.cat([_decade_midpoints(i, 2**i) for i in range(7)])
        values = torch.cat(
            [-positive, torch.zeros(1, dtype=torch.float64), positive, torch.ones(1, dtype=torch.float64)]
        )
    else:
        positive = torch.cat([_decade_midpoints(i, 2 ** (i + 1)) for i in range(7)])
        values = torch.cat([torch.zeros(1, dtype=torch.float64), positive, torch.ones(1, dtype=torch.float64)])
    return torch.sort(values).values.to(torch.float32)


@functools.cache
def _midpoints(signed: bool) -> torch.Tensor:
    code = dynamic_map(signed)
    return (code[1:] + code[:-1]) / 2


def num_blocks(numel: int, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    return -(-numel // block_size)


def quantize_blockwise(
    x: torch.Tensor, *, signed: bool, block_size: int = DEFAULT_BLOCK_SIZE, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` to ``(codes, absmax)``: uint8 codes of ``x``'s shape and float32 block maxima.

    ``out`` (uint8, ``x``'s shape) receives the codes in place when given.
    """
    flat = x.detach().reshape(-1).to(torch.float32)
    n = flat.numel()
    blocks = num_blocks(n, block_size)
    padded = torch.nn.functional.pad(flat, (0, blocks * block_size - n)).view(blocks, block_size)
    absmax = padded.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    normalized = (padded / scale.unsqueeze(1)).clamp_(-1.0, 1.0)
    midpoints = _midpoints(signed).to(flat.device)
    codes = torch.bucketize(normalized, midpoints)  # index of the nearest code value
    if signed:
        values = dynamic_map(True).to(flat.device)[codes]
        codes = codes + ((normalized > 0) & (values < 0)).long() - ((normalized < 0) & (values > 0)).long()
    codes = codes.view(-1)[:n].to(torch.uint8).view(x.shape)
    if out is not None:
        out.copy_(codes)
        codes = out
    return codes, absmax


def dequantize_blockwise(
    codes: torch.Tensor, absmax: torch.Tensor, *, signed: bool, block_size: int = DEFAULT_BLOCK_SIZE
) -> torch.Tensor:
    """Float32 values of ``(codes, absmax)`` in ``codes``' shape."""
    n = codes.numel()
    values = dynamic_map(signed).to(codes.device)[codes.reshape(-1).long()]
    blocks = num_blocks(n, block_size)
    scaled = torch.nn.functional.pad(values, (0, blocks * block_size - n)).view(blocks, block_size)
    scaled = scaled * absmax.unsqueeze(1)
    return scaled.view(-1)[:n].view(codes.shape)
