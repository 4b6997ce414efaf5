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

Dequantization is ``x_hat = map[code] * N_b``. The blocks are those of the *whole* tensor read flat (as
bitsandbytes cuts them); a piece of a sharded tensor is quantized in place with the maxima of the blocks
it overlaps (``start``, ``absmax`` arguments), so sharding never changes a code (see
:mod:`memopt.state.storage`). A block's largest positive value is stored exactly, and since 0
is a code value, rounding to the nearest code never changes a value's sign.
The maps and the rounding rule follow the paper's description (and bitsandbytes' documented behaviour);
the code here is our own.
"""

from __future__ import annotations

import functools

import torch

from memopt.state import sharding

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
    """The 255 midpoints between consecutive code values, then +inf (so that index 255 never rounds up)."""
    code = dynamic_map(signed)
    return torch.cat([(code[1:] + code[:-1]) / 2, torch.tensor([float("inf")])])


#: A float32 ``y`` in [-1, 1] falls in the bucket keyed by its sign, its exponent (those below
#: ``_MIN_EXPONENT``, magnitudes under 2^-22, all share the lowest exponent's first bucket: every code
#: boundary lies above them) and its top 8 mantissa bits: 2 x 32 x 256 keys, a 16 KiB table.
_MIN_EXPONENT = 127 - 22
_MANTISSA_BITS = 8
_EXPONENT_BITS = 5
_NUM_KEYS = 2 << (_EXPONENT_BITS + _MANTISSA_BITS)


def bucket_keys(normalized: torch.Tensor) -> torch.Tensor:
    """The lookup-table key (int32) of each float32 element of ``normalized`` (values in [-1, 1])."""
    bits = normalized.view(torch.int32)
    # magnitudes below 2^-22 are raised to it: they share the first bucket of the lowest exponent
    magnitude = (bits & 0x7FFFFFFF).clamp_(min=_MIN_EXPONENT << 23)
    position = (magnitude >> (23 - _MANTISSA_BITS)).sub_(_MIN_EXPONENT << _MANTISSA_BITS)
    return ((bits >> 31) & 1).bitwise_left_shift_(_EXPONENT_BITS + _MANTISSA_BITS).bitwise_or_(position)


def _bucket_ends() -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest and highest float32 value of every bucket, clamped to [-1, 1] (buckets of exponents above
    1.0 are never used)."""
    keys = torch.arange(_NUM_KEYS, dtype=torch.int64)
    sign = keys >> (_EXPONENT_BITS + _MANTISSA_BITS)
    exponent = ((keys >> _MANTISSA_BITS) & ((1 << _EXPONENT_BITS) - 1)) + _MIN_EXPONENT
    mantissa = keys & ((1 << _MANTISSA_BITS) - 1)
    start = (sign << 31) | (exponent << 23) | (mantissa << (23 - _MANTISSA_BITS))
    end = start | ((1 << (23 - _MANTISSA_BITS)) - 1)
    first = (exponent == _MIN_EXPONENT) & (mantissa == 0)
    start = torch.where(first, sign << 31, start)  # the shared bucket reaches down to +-0
    as_float = lambda bits: bits.to(torch.int32).view(torch.float32)
    ends = torch.stack([as_float(start), as_float(end)]).clamp(-1.0, 1.0)
    return ends.amin(dim=0), ends.amax(dim=0)


@functools.cache
def nearest_code_table(signed: bool) -> torch.Tensor:
    """For each bucket (:func:`bucket_keys`), the number of code midpoints below it (uint8).

    A value ``y`` of that bucket then rounds to code ``c + (y > midpoint[c])``: exactly the nearest code
    (``torch.bucketize`` against the midpoints) as long as no bucket holds two midpoints, which holds for
    both maps (a bucket spans 0.4% of its values, the maps' codes are at least 0.7% apart where buckets are
    that fine) and is checked here. This replaces a binary search per element by two table reads.
    """
    lowest, highest = _bucket_ends()
    midpoints = _midpoints(signed)[:-1]
    below = torch.bucketize(lowest, midpoints)  # midpoints strictly below the bucket's lowest value
    if int((torch.bucketize(highest, midpoints) - below).max()) > 1:
        raise AssertionError("a lookup bucket spans two code midpoints; use more mantissa bits")
    return below.to(torch.uint8)


def nearest_codes(normalized: torch.Tensor, signed: bool) -> torch.Tensor:
    """Index (int32) of the code value nearest to each element of ``normalized`` (float32 in [-1, 1])."""
    table = nearest_code_table(signed).to(normalized.device)
    midpoints = _midpoints(signed).to(normalized.device)
    keys = bucket_keys(normalized).view(-1)
    below = torch.index_select(table, 0, keys).int()  # index_select: several times faster than t[idx] on CPU
    above = normalized.reshape(-1) > torch.index_select(midpoints, 0, below)
    return (below + above).view(normalized.shape)


def num_blocks(numel: int, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    return -(-numel // block_size)


def block_maxima(x: torch.Tensor, *, block_size: int = DEFAULT_BLOCK_SIZE, start: int = 0) -> torch.Tensor:
    """The absolute maximum (float32) of ``x`` in each block it overlaps, ``x`` being the elements
    ``[start, start + x.numel())`` of a flat tensor cut into blocks from element 0.

    For a piece of a sharded tensor the first and last maxima are partial when a block continues on the
    neighbouring rank; their ``MAX`` over the ranks is the whole block's maximum.
    """
    return sharding.flat_blocks(x.detach().reshape(-1).to(torch.float32), block_size, start)[1].abs().amax(dim=1)


def quantize_blockwise(
    x: torch.Tensor,
    *,
    signed: bool,
    block_size: int = DEFAULT_BLOCK_SIZE,
    out: torch.Tensor | None = None,
    start: int = 0,
    absmax: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` to ``(codes, absmax)``: uint8 codes of ``x``'s shape and float32 block maxima.

    ``out`` (uint8, ``x``'s shape) receives the codes in place when given. ``start`` places ``x`` in a
    larger flat tensor whose blocks start at element 0 (a shard of it); ``absmax`` gives the maxima of the
    blocks ``x`` overlaps (whole-block maxima combined across shards) instead of computing them from ``x``.
    """
    flat = x.detach().reshape(-1).to(torch.float32)
    _, padded = sharding.flat_blocks(flat, block_size, start)
    if absmax is None:
        absmax = padded.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    normalized = (padded / scale.unsqueeze(1)).clamp_(-1.0, 1.0)
    codes = sharding.unblock(nearest_codes(normalized, signed), start, flat.numel()).to(torch.uint8).view(x.shape)
    if out is not None:
        out.copy_(codes)
        codes = out
    return codes, absmax


def dequantize_blockwise(
    codes: torch.Tensor,
    absmax: torch.Tensor,
    *,
    signed: bool,
    block_size: int = DEFAULT_BLOCK_SIZE,
    start: int = 0,
) -> torch.Tensor:
    """Float32 values of ``(codes, absmax)`` in ``codes``' shape; ``absmax`` holds the maxima of the blocks
    ``codes`` overlaps, placed at ``start`` in a larger flat tensor (see :func:`quantize_blockwise`)."""
    values = torch.index_select(dynamic_map(signed).to(codes.device), 0, codes.reshape(-1).int())
    scaled = sharding.flat_blocks(values, block_size, start)[1] * absmax.unsqueeze(1)
    return sharding.unblock(scaled, start, codes.numel()).view(codes.shape)


# --------------------------------------------------------------------------------------------- 4-bit
#: block size of 4-bit states (Li, Chen & Zhu, "Memory Efficient Optimizers with 4-bit States", NeurIPS
#: 2023: smaller blocks than 8-bit's, since 16 codes cannot absorb a block's outliers)
FOUR_BIT_BLOCK_SIZE = 128


@functools.cache
def four_bit_map(signed: bool) -> torch.Tensor:
    """The sorted code values (float32) of a 4-bit state, after Li et al. (2023).

    * signed (first moment): the dynamic exponent (DE) map on 4 bits, 16 values: for decades ``i = 0..2``
      the ``2^i`` midpoints of ``2^i`` equal bins of ``[0.1, 1]`` scaled by ``10^(i-2)``, their negatives,
      0 and +1;
    * unsigned (second moment): the paper's "DE-0": the unsigned DE map (the sign bit a fraction bit, so
      decade ``i`` has ``2^(i+1)`` values) *without its zero*, 15 values from 0.00325 to 1 (code 15 unused).
      A zero code would turn a small second moment into 0 and the update ``m / (sqrt(v) + eps)`` into
      ``m / eps`` (the paper's zero-point problem). The paper's other zero-free map, linear ``(k + 1) / 16``,
      rounds every value under ``absmax / 32`` up to ``absmax / 16``; with block-wise (not rank-1)
      normalization it trained a small MLP markedly worse than DE-0 (loss about 6e-3 against 4e-4 after 100
      AdamW steps, float32 3e-4; ``tests/optim/test_state_storage_4bit.py``), so DE-0 is used.
    """
    one = torch.ones(1, dtype=torch.float64)
    if signed:
        positive = torch.cat([_decade_midpoints(i + 4, 2**i) for i in range(3)])  # decade i+4: scale 10^(i-2)
        values = torch.cat([-positive, torch.zeros(1, dtype=torch.float64), positive, one])
    else:
        values = torch.cat([_decade_midpoints(i + 4, 2 ** (i + 1)) for i in range(3)] + [one])
    return torch.sort(values).values.to(torch.float32)


@functools.cache
def _four_bit_midpoints(signed: bool) -> torch.Tensor:
    code = four_bit_map(signed)
    return (code[1:] + code[:-1]) / 2


def _blocks(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    pad = num_blocks(flat.numel(), block_size) * block_size - flat.numel()
    return torch.nn.functional.pad(flat, (0, pad)).view(-1, block_size)


def quantize_4bit(
    x: torch.Tensor, *, signed: bool, block_size: int = FOUR_BIT_BLOCK_SIZE, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` (read flat) to ``(packed, absmax)``: ``ceil(numel / 2)`` uint8 bytes, element ``2k`` in
    the low and ``2k + 1`` in the high nibble of byte ``k`` (the high nibble of an odd tensor's last byte is
    0), each the index of the nearest code of :func:`four_bit_map` to ``x / N_b`` (ties to the lower code);
    and the float32 maxima ``N_b`` of the blocks of ``block_size`` elements. ``out`` receives the bytes."""
    flat = x.detach().reshape(-1).to(torch.float32)
    n = flat.numel()
    padded = _blocks(flat, block_size)
    absmax = padded.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    normalized = (padded / scale.unsqueeze(1)).clamp_(-1.0, 1.0)
    codes = torch.bucketize(normalized, _four_bit_midpoints(signed).to(x.device)).view(-1)[:n]
    if n % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    pairs = codes.to(torch.uint8).view(-1, 2)
    packed = pairs[:, 0] | (pairs[:, 1] << 4)
    if out is not None:
        out.copy_(packed)
        packed = out
    return packed, absmax


def dequantize_4bit(
    packed: torch.Tensor, absmax: torch.Tensor, *, signed: bool, numel: int, block_size: int = FOUR_BIT_BLOCK_SIZE
) -> torch.Tensor:
    """The ``numel`` float32 values (flat) of ``(packed, absmax)`` from :func:`quantize_4bit`."""
    codes = torch.stack([packed & 15, packed >> 4], dim=1).view(-1)[:numel].int()
    values = torch.index_select(four_bit_map(signed).to(packed.device), 0, codes)
    return (_blocks(values, block_size) * absmax.unsqueeze(1)).view(-1)[:numel]
