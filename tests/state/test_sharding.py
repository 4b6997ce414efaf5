"""The local pieces of sharded tensors, in one process: cut a tensor on dim 0 as FSDP2 does and check that
what each piece computes adds up to (or equals) what the whole tensor computes. The collectives
themselves run in ``tests/distributed``."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from memopt.estimators.extreme_tensoring import (
    from_modes,
    local_mode_sums,
    local_tensor_product_root,
    mode_sums,
    tensor_index,
    tensor_product_root,
    to_modes,
)
from memopt.state import quantization, sharding


def pieces(shape: tuple[int, ...], world: int) -> list[sharding.ShardSpec]:
    """The specs of ``world`` torch.chunk-style pieces of dim 0 (no process group: the test adds up)."""
    rows = shape[0]
    chunk = -(-rows // world)
    specs = []
    for rank in range(world):
        start = min(rank * chunk, rows)
        specs.append(sharding.ShardSpec(tuple(shape), start, min(start + chunk, rows)))
    return specs


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3000),
    cuts=st.lists(st.integers(0, 3000), max_size=3),
    block=st.sampled_from([16, 64, 256]),
    signed=st.booleans(),
)
def test_pieces_quantized_with_combined_maxima_equal_the_whole(n, cuts, block, signed):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 3
    if not signed:
        x = x.abs()
    codes, absmax = quantization.quantize_blockwise(x, signed=signed, block_size=block)
    bounds = sorted({0, n, *(c % (n + 1) for c in cuts)})
    combined = torch.zeros_like(absmax)
    for start, stop in itertools.pairwise(bounds):  # each piece's maxima, combined with MAX as ranks do
        maxima = quantization.block_maxima(x[start:stop], block_size=block, start=start)
        first = start // block
        combined[first : first + maxima.numel()] = torch.maximum(combined[first : first + maxima.numel()], maxima)
    assert torch.equal(combined, absmax)
    for start, stop in itertools.pairwise(bounds):
        first, count = start // block, maxima_count(start, stop - start, block)
        piece_codes, _ = quantization.quantize_blockwise(
            x[start:stop], signed=signed, block_size=block, start=start, absmax=absmax[first : first + count]
        )
        assert torch.equal(piece_codes, codes[start:stop])
        values = quantization.dequantize_blockwise(
            piece_codes, absmax[first : first + count], signed=signed, block_size=block, start=start
        )
        whole = quantization.dequantize_blockwise(codes, absmax, signed=signed, block_size=block)
        assert torch.equal(values, whole[start:stop])


def maxima_count(start: int, n: int, block: int) -> int:
    return -(-(start % block + n) // block) if n else 0


@pytest.mark.parametrize("start", [0, 5, 16, 37])
def test_flat_blocks_pad_a_piece_to_the_blocks_it_overlaps(start):
    flat = torch.arange(1.0, 24.0)
    first, blocks = sharding.flat_blocks(flat, 16, start)
    assert first == start // 16 and blocks.shape == (maxima_count(start, 23, 16), 16)
    assert blocks.reshape(-1)[: start % 16].eq(0).all()
    assert torch.equal(sharding.unblock(blocks, start, 23), flat)


ET_SHAPES = [(64, 70), (69, 64), (7, 5, 3), (1, 64), (13,), (4223,), (11, 1, 6)]


@pytest.mark.parametrize("order", [3, 2, None])
@pytest.mark.parametrize("shape", ET_SHAPES)
@pytest.mark.parametrize("world", [2, 3])
def test_extreme_tensoring_pieces_add_up_to_the_slice_sums_and_rebuild_the_denominator(shape, order, world):
    index = tensor_index(shape, order)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    whole = mode_sums(to_modes(g * g, index))
    parts = [torch.zeros_like(s) for s in whole]
    accumulators = [s.abs() + 0.5 for s in whole]
    denominator = from_modes(tensor_product_root(accumulators), index, g.shape)
    for spec in pieces(shape, world):
        rows = g[spec.start : spec.stop]
        for total, part in zip(parts, local_mode_sums(rows * rows, index, spec)):
            total += part
        piece = local_tensor_product_root(accumulators, index, spec, rows.shape)
        assert torch.equal(piece, denominator[spec.start : spec.stop])  # the same products, bit for bit
    for total, expected in zip(parts, whole):
        torch.testing.assert_close(total, expected, rtol=1e-12, atol=1e-12)


def test_whole_tensors_have_a_spec_without_a_group():
    spec = sharding.spec_of(torch.zeros(5, 3))
    assert not spec.sharded and (spec.start, spec.stop, spec.row_numel) == (0, 5, 3)
    t = torch.ones(3)
    assert spec.all_reduce(t) is t and spec.gather(t) is t and sharding.local(t) is t
    assert sharding.local_state(torch.zeros(2), state := {"a": t}) is state
