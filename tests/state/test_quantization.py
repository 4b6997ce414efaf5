"""8-bit block-wise dynamic quantization: the maps, round-trip error bounds, blocks, signs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from memopt.state.quantization import dequantize_blockwise, dynamic_map, quantize_blockwise


def test_signed_map_invariants():
    code = dynamic_map(True)
    assert code.numel() == 256 and torch.all(code[1:] > code[:-1])
    assert code[127] == 0 and code[-1] == 1.0
    assert code[0].item() == pytest.approx(-0.99296875, abs=1e-7)
    assert code[128].item() == pytest.approx(5.5e-7, rel=1e-5)
    positive = code[128:-1]
    counts = [int(((positive >= 10.0 ** (i - 7)) & (positive < 10.0 ** (i - 6))).sum()) for i in range(7)]
    assert counts == [1, 2, 4, 8, 16, 32, 64]


def test_unsigned_map_invariants():
    code = dynamic_map(False)
    assert code.numel() == 256 and torch.all(code[1:] > code[:-1])
    assert code[0] == 0 and code[-1] == 1.0
    assert code[1].item() == pytest.approx(3.25e-7, rel=1e-5)
    positive = code[1:-1]
    counts = [int(((positive >= 10.0 ** (i - 7)) & (positive < 10.0 ** (i - 6))).sum()) for i in range(7)]
    assert counts == [2, 4, 8, 16, 32, 64, 128]
    assert (code[-2] - code[-3]).item() == pytest.approx(0.9 / 128, rel=1e-5)


def _half_gap_bound(values: torch.Tensor, signed: bool) -> torch.Tensor:
    """Half the largest gap of the map around each normalized value: the nearest-code rounding bound."""
    code = dynamic_map(signed).double()
    idx = torch.bucketize(values.double(), code).clamp(1, 255)
    gap = torch.maximum(code[idx] - code[idx - 1], code[(idx + 1).clamp(max=255)] - code[idx])
    return gap / 2


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 3000),
    block=st.sampled_from([64, 256, 2048]),
    signed=st.booleans(),
    scale=st.floats(1e-8, 1e4),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_error_is_within_half_a_code_gap_per_block(n, block, signed, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=generator) * scale
    if not signed:
        x = x.abs()
    codes, absmax = quantize_blockwise(x, signed=signed, block_size=block)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape and absmax.numel() == -(-n // block)
    x_hat = dequantize_blockwise(codes, absmax, signed=signed, block_size=block)
    blocks = torch.nn.functional.pad(x, (0, absmax.numel() * block - n)).view(-1, block)
    torch.testing.assert_close(absmax, blocks.abs().amax(dim=1))
    per_element_max = absmax.repeat_interleave(block)[:n]
    bound = _half_gap_bound(x / per_element_max.clamp_min(1e-38), signed) * per_element_max
    assert torch.all((x_hat - x).abs() <= bound * (1 + 1e-5) + 1e-12 * per_element_max)
    # the largest positive value of every block is represented exactly
    first_max = blocks.argmax(dim=1) + torch.arange(absmax.numel()) * block
    positive = blocks.amax(dim=1) == absmax
    kept = first_max[positive & (first_max < n)]
    torch.testing.assert_close(x_hat[kept], x[kept], rtol=1e-6, atol=0)
    if signed:  # no nonzero value changes sign
        assert torch.all((x_hat * x) >= 0)


def test_negative_block_max_comes_back_as_the_largest_negative_code():
    x = torch.tensor([-2.0, 0.5, 1.0])
    codes, absmax = quantize_blockwise(x, signed=True, block_size=256)
    x_hat = dequantize_blockwise(codes, absmax, signed=True, block_size=256)
    assert x_hat[0].item() == pytest.approx(-0.99296875 * 2.0, rel=1e-6)


def test_blocks_are_independent():
    x = torch.randn(257)
    codes, absmax = quantize_blockwise(x, signed=True)
    assert absmax.numel() == 2
    y = x.clone()
    y[256] = 100.0
    codes_y, absmax_y = quantize_blockwise(y, signed=True)
    assert torch.equal(codes_y[:256], codes[:256]) and absmax_y[0] == absmax[0] and absmax_y[1] == 100.0


def test_zero_blocks_quantize_to_zero():
    codes, absmax = quantize_blockwise(torch.zeros(300), signed=False)
    assert torch.all(dequantize_blockwise(codes, absmax, signed=False) == 0)


@pytest.mark.parametrize("signed", [True, False])
def test_lookup_rounding_equals_nearest_code_search(signed):
    from memopt.state.quantization import _midpoints, nearest_codes

    generator = torch.Generator().manual_seed(0)
    magnitudes = 10.0 ** torch.empty(200_000).uniform_(-9, 0, generator=generator)
    values = magnitudes * (torch.randint(0, 2, (200_000,), generator=generator) * 2 - 1 if signed else 1)
    code = dynamic_map(signed)
    # the midpoints themselves and their float neighbours, the hardest cases
    mids = (code[1:] + code[:-1]) / 2
    edges = torch.cat([mids, torch.nextafter(mids, torch.tensor(2.0)), torch.nextafter(mids, torch.tensor(-2.0))])
    values = torch.cat([values.float(), edges, torch.tensor([0.0, -0.0, 1.0, -1.0])]).clamp(-1, 1)
    if not signed:
        values = values.abs()
    expected = torch.bucketize(values, _midpoints(signed)[:-1])
    assert torch.equal(nearest_codes(values, signed).long(), expected)
