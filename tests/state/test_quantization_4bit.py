"""4-bit block-wise quantization (Li, Chen & Zhu, NeurIPS 2023): maps, nearest codes, packing, error."""

from __future__ import annotations

import pytest
import torch

from memopt.state import quantization as q


def _brute_force_codes(x: torch.Tensor, signed: bool, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element, the index of the nearest code to x / block max (the lowest on a tie), in float64."""
    code = q.four_bit_map(signed).double()
    flat = x.double().reshape(-1)
    codes, maxima = [], []
    for start in range(0, flat.numel(), block):
        piece = flat[start : start + block]
        top = piece.abs().max()
        maxima.append(top)
        normalized = (piece / (top if top > 0 else 1)).clamp(-1, 1)
        codes.append((normalized[:, None] - code[None, :]).abs().argmin(dim=1))
    return torch.cat(codes), torch.stack(maxima)


def _unpack(packed: torch.Tensor, numel: int) -> torch.Tensor:
    return torch.stack([packed & 15, packed >> 4], dim=1).reshape(-1)[:numel].long()


def test_maps_follow_the_paper():
    signed, unsigned = q.four_bit_map(True), q.four_bit_map(False)
    # signed dynamic exponent map: 7 magnitudes, their negatives, 0 and 1
    expected = torch.tensor([0.0055, 0.0325, 0.0775, 0.2125, 0.4375, 0.6625, 0.8875])
    torch.testing.assert_close(signed, torch.cat([-expected.flip(0), torch.zeros(1), expected, torch.ones(1)]))
    # unsigned: the dynamic exponent map without zero (DE-0): 15 positive values, none of them 0
    assert unsigned.numel() == 15 and unsigned.min().item() == pytest.approx(0.00325) and unsigned.max() == 1
    assert (unsigned > 0).all() and (unsigned.diff() > 0).all()


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("numel", [1, 127, 128, 129, 1001, 4097])
def test_codes_are_the_nearest_codes_and_packed_two_per_byte(signed, numel):
    generator = torch.Generator().manual_seed(numel)
    x = torch.randn(numel, generator=generator) * torch.logspace(-4, 1, numel)  # magnitudes over 5 decades
    x = x if signed else x.abs()
    packed, absmax = q.quantize_4bit(x, signed=signed)
    assert packed.dtype == torch.uint8 and packed.numel() == (numel + 1) // 2
    assert absmax.numel() == -(-numel // 128)
    codes, maxima = _brute_force_codes(x, signed, 128)
    assert torch.equal(_unpack(packed, numel), codes)
    torch.testing.assert_close(absmax.double(), maxima, rtol=0, atol=0)
    if numel % 2:
        assert int(packed[-1]) >> 4 == 0  # the spare high nibble of an odd tensor is 0


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("numel", [129, 4097])
def test_round_trip_error_is_within_half_the_largest_gap(signed, numel):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(numel, generator=generator) * 3
    x = x if signed else x.square()
    packed, absmax = q.quantize_4bit(x, signed=signed)
    back = q.dequantize_4bit(packed, absmax, signed=signed, numel=numel)
    code = q.four_bit_map(signed)
    half_gap = code.diff().max().item() / 2  # 0.1125 signed, 0.05625 unsigned (its lowest code 0.00325 < that)
    assert half_gap == pytest.approx(0.1125 if signed else 0.05625)
    block_max = absmax.repeat_interleave(128)[:numel]
    assert ((back - x).abs() <= half_gap * block_max * (1 + 1e-6)).all()
    if not signed:  # the block maxima come back exactly (code 1.0)
        assert torch.equal(back.max(), x.max())


def test_unsigned_map_never_returns_zero_for_a_nonzero_block():
    x = torch.zeros(256)
    x[0] = 1.0  # block 0: one large value and 127 zeros; block 1: all zeros
    packed, absmax = q.quantize_4bit(x, signed=False)
    back = q.dequantize_4bit(packed, absmax, signed=False, numel=256)
    assert (back[:128] > 0).all() and back[1:128].max().item() == pytest.approx(0.00325)
    assert torch.equal(back[128:], torch.zeros(128))  # a zero block max dequantizes to exact zeros
