"""The Triton kernels themselves, imported (with Triton) on first use by :func:`memopt.kernels.triton.kernels`;
under ``TRITON_INTERPRET=1`` Triton runs them in its interpreter.

Every floating-point operation is the one the engine's torch path performs on the same device, in the same
order and precision: IEEE division and square root (``div_rn``, ``sqrt_rn``, as torch's CUDA and CPU
kernels compute them), and one fused multiply-add exactly where torch's kernels fuse (``lerp``, ``add`` with
``alpha``): the launchers turn Triton's contraction of other multiply-adds off (``enable_fp_fusion=False``,
:data:`memopt.kernels.triton.LAUNCH`), since torch rounds, e.g., a dequantized moment before it updates it.
Requantization finds the nearest code of the dynamic map with the lookup table of
:func:`memopt.state.quantization.nearest_code_table` and one midpoint comparison, so codes are bit-identical
to :func:`memopt.state.quantization.nearest_codes`.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _nearest_codes(y, table, midpoints, MIN_EXPONENT: tl.constexpr, MANTISSA: tl.constexpr, EXPONENT: tl.constexpr):
    """Index of the nearest code to each ``y`` in [-1, 1] (int32): memopt.state.quantization's bucket key
    (sign, exponent from MIN_EXPONENT, top MANTISSA mantissa bits), its table entry ``c`` (the number of
    midpoints below the bucket), then ``c + (y > midpoint[c])`` (ties to the lower code)."""
    bits = y.to(tl.int32, bitcast=True)
    magnitude = tl.maximum(bits & 0x7FFFFFFF, MIN_EXPONENT << 23)
    position = (magnitude >> (23 - MANTISSA)) - (MIN_EXPONENT << MANTISSA)
    key = (((bits >> 31) & 1) << (EXPONENT + MANTISSA)) | position
    below = tl.load(table + key).to(tl.int32)
    return below + (y > tl.load(midpoints + below)).to(tl.int32)


@triton.jit
def _normalized(x, absmax):
    """``clamp(x / s, -1, 1)`` with ``s = absmax`` (1 for an all-zero block), as quantize_blockwise does."""
    scale = tl.where(absmax > 0, absmax, 1.0)
    return tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -1.0), 1.0)


@triton.jit
def _lerp(start, end, weight):
    """torch's ``lerp`` (its vectorized CPU and its CUDA kernel): one fused multiply-add on either side of 1/2."""
    diff = end - start
    return tl.where(weight < 0.5, tl.fma(diff, weight, start), tl.fma(diff, weight - 1.0, end))


@triton.jit
def adamw8bit_kernel(
    param, grad, m_codes, m_absmax, v_codes, v_absmax, n, block_size,
    signed_map, unsigned_map, signed_table, signed_mid, unsigned_table, unsigned_mid,
    beta1_weight, beta2, one_minus_beta2, eps, decay, neg_step_size, root_correction,
    BLOCK: tl.constexpr, MIN_EXPONENT: tl.constexpr, MANTISSA: tl.constexpr, EXPONENT: tl.constexpr,
):  # fmt: skip
    """One AdamW step over one quantization block (program ``b``: elements ``[b B, (b + 1) B)``)."""
    b = tl.program_id(0)
    lane = tl.arange(0, BLOCK)
    offs = b.to(tl.int64) * block_size + lane
    mask = (lane < block_size) & (offs < n)
    g = tl.load(grad + offs, mask=mask, other=0.0)
    p = tl.load(param + offs, mask=mask, other=0.0)
    m_code = tl.load(m_codes + offs, mask=mask, other=0).to(tl.int32)
    v_code = tl.load(v_codes + offs, mask=mask, other=0).to(tl.int32)
    m = tl.load(signed_map + m_code) * tl.load(m_absmax + b)
    v = tl.load(unsigned_map + v_code) * tl.load(v_absmax + b)
    m = _lerp(m, g, beta1_weight)
    v = tl.fma(g * g, one_minus_beta2, v * beta2)
    m = tl.where(mask, m, 0.0)
    v = tl.where(mask, v, 0.0)
    denom = tl.math.div_rn(tl.math.sqrt_rn(v), root_correction) + eps
    p = tl.fma(tl.math.div_rn(m, denom), neg_step_size, p * decay)
    tl.store(param + offs, p, mask=mask)
    m_max = tl.max(tl.abs(m), axis=0)
    v_max = tl.max(tl.abs(v), axis=0)
    tl.store(m_absmax + b, m_max)
    tl.store(v_absmax + b, v_max)
    m_new = _nearest_codes(_normalized(m, m_max), signed_table, signed_mid, MIN_EXPONENT, MANTISSA, EXPONENT)
    v_new = _nearest_codes(_normalized(v, v_max), unsigned_table, unsigned_mid, MIN_EXPONENT, MANTISSA, EXPONENT)
    tl.store(m_codes + offs, m_new.to(tl.uint8), mask=mask)
    tl.store(v_codes + offs, v_new.to(tl.uint8), mask=mask)


@triton.jit
def dequantize_kernel(codes, absmax, out, n, start, block_size, first_block, code_map, BLOCK: tl.constexpr):
    """``out[i] = map[codes[i]] * absmax[block(i)]`` for the ``n`` elements at flat position ``start``."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    code = tl.load(codes + offs, mask=mask, other=0).to(tl.int32)
    scale = tl.load(absmax + ((start + offs) // block_size - first_block), mask=mask, other=0.0)
    tl.store(out + offs, tl.load(code_map + code) * scale, mask=mask)


@triton.jit
def quantize_kernel(
    value, codes, absmax, n, start, block_size, first_block, table, midpoints,
    COMPUTE_MAX: tl.constexpr, BLOCK: tl.constexpr,
    MIN_EXPONENT: tl.constexpr, MANTISSA: tl.constexpr, EXPONENT: tl.constexpr,
):  # fmt: skip
    """Codes of the elements of one block (program ``k``: block ``first_block + k``) of the ``n`` elements at
    flat position ``start``, against the block's maximum (computed over them, or read, as given)."""
    k = tl.program_id(0)
    lane = tl.arange(0, BLOCK)
    offs = (first_block + k).to(tl.int64) * block_size - start + lane
    mask = (lane < block_size) & (offs >= 0) & (offs < n)
    x = tl.load(value + offs, mask=mask, other=0.0)
    if COMPUTE_MAX:
        block_max = tl.max(tl.abs(x), axis=0)
        tl.store(absmax + k, block_max)
    else:
        block_max = tl.load(absmax + k)
    code = _nearest_codes(_normalized(x, block_max), table, midpoints, MIN_EXPONENT, MANTISSA, EXPONENT)
    tl.store(codes + offs, code.to(tl.uint8), mask=mask)


@triton.jit
def _tile_squares(grad, exp_avg, r, c, rows, cols, beta1_weight, HAS_MOMENTUM: tl.constexpr):
    """On the tile ``rows r x columns c`` of the ``(rows, cols)`` view: ``m <- lerp(m, g, 1 - beta1)`` in
    place (with momentum), and ``g^2`` (zero outside the view)."""
    mask = (r[:, None] < rows) & (c[None, :] < cols)
    offs = r[:, None] * cols + c[None, :]
    g = tl.load(grad + offs, mask=mask, other=0.0)
    if HAS_MOMENTUM:
        m = tl.load(exp_avg + offs, mask=mask, other=0.0)
        tl.store(exp_avg + offs, _lerp(m, g, beta1_weight), mask=mask)
    return g * g


@triton.jit
def subset_rows_kernel(
    grad, exp_avg, stat, rows, cols, beta1_weight,
    HAS_MOMENTUM: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """Subsets along rows of the ``(rows, cols)`` view: ``m <- lerp(m, g, 1 - beta1)`` and
    ``stat[r] = sum_j g[r, j]^2``, for ``ROWS`` rows per program in one pass over ``g`` and ``m``."""
    r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    total = tl.zeros((ROWS,), dtype=tl.float32)
    for c0 in range(0, cols, COLS):
        c = c0 + tl.arange(0, COLS)
        total += tl.sum(_tile_squares(grad, exp_avg, r, c, rows, cols, beta1_weight, HAS_MOMENTUM), axis=1)
    tl.store(stat + r, total, mask=r < rows)


@triton.jit
def subset_cols_kernel(
    grad, exp_avg, stat, rows, cols, beta1_weight,
    HAS_MOMENTUM: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """Subsets along columns of the ``(rows, cols)`` view: the momentum update and
    ``stat[j] = sum_r g[r, j]^2``, for ``COLS`` columns per program, walking down the rows."""
    c = tl.program_id(0).to(tl.int64) * COLS + tl.arange(0, COLS)
    total = tl.zeros((COLS,), dtype=tl.float32)
    for r0 in range(0, rows, ROWS):
        r = r0 + tl.arange(0, ROWS).to(tl.int64)
        total += tl.sum(_tile_squares(grad, exp_avg, r, c, rows, cols, beta1_weight, HAS_MOMENTUM), axis=0)
    tl.store(stat + c, total, mask=c < cols)


@triton.jit
def subset_apply_kernel(
    param, numerator, denom, n, cols, decay, neg_step_size,
    PER_ROW: tl.constexpr, DECAY_AFTER: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``p <- p + neg_step_size * N / D[subset]`` over the flat ``(rows, cols)`` view (``D`` per row or per
    column), with the decoupled decay ``p <- decay p`` before or after."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    subset = offs // cols if PER_ROW else offs % cols
    d = tl.load(denom + subset, mask=mask, other=1.0)
    p = tl.load(param + offs, mask=mask, other=0.0)
    num = tl.load(numerator + offs, mask=mask, other=0.0)
    if not DECAY_AFTER:
        p = p * decay
    p = tl.fma(tl.math.div_rn(num, d), neg_step_size, p)  # addcdiv, as torch's CUDA kernel contracts it
    if DECAY_AFTER:
        p = p * decay
    tl.store(param + offs, p, mask=mask)
