"""memopt's AdamW8bit against bitsandbytes' AdamW8bit on CPU (the 8-bit optimizers paper's own code).

Both quantize the two moments block-wise (256 elements, the same signed and unsigned dynamic maps) and run
the update in float32. They are not bit-identical: bitsandbytes' CPU quantizer picks the second-nearest
code for about 0.2% of values (its search is approximate; memopt's rounding is exactly nearest), and once a
code differs the two trajectories drift apart by quantization noise. The tolerances below are a few code
steps for the states and one learning rate for the parameters; a different map, block size, bias
correction or weight decay breaks them by an order of magnitude.
"""

from __future__ import annotations

import pytest
import torch

import memopt
from memopt.state import quantization, storage

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is in the dev extras: pip install -e '.[dev]'")

LR = 1e-3


def _dequantize_bnb(state: dict, index: int) -> torch.Tensor:
    """bitsandbytes' block-wise state ``index`` as float32 (its layout: code values times block absmax)."""
    codes, qmap, absmax = state[f"state{index}"], state[f"qmap{index}"], state[f"absmax{index}"]
    values = qmap[codes.reshape(-1).long()]
    n, blocks = values.numel(), absmax.numel()
    padded = torch.nn.functional.pad(values, (0, blocks * 256 - n)).view(blocks, 256) * absmax.unsqueeze(1)
    return padded.view(-1)[:n].view(codes.shape)


def _run_both(shape, steps):
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(shape, generator=generator) * 0.1
    ours = start.clone().requires_grad_()
    theirs = start.clone().requires_grad_()
    reference = start.clone().requires_grad_()
    optimizers = [
        memopt.AdamW8bit([ours], lr=LR, weight_decay=0.01),
        bnb.optim.AdamW8bit([theirs], lr=LR, weight_decay=0.01),
        torch.optim.AdamW([reference], lr=LR, weight_decay=0.01),
    ]
    for _ in range(steps):
        grad = torch.randn(shape, generator=generator) * 0.01 + 0.003
        for param, optimizer in zip((ours, theirs, reference), optimizers):
            param.grad = grad.clone()
            optimizer.step()
    return (ours, optimizers[0].state[ours]), (theirs, optimizers[1].state[theirs]), reference


def test_the_dynamic_maps_are_bitsandbytes_maps():
    for signed in (True, False):
        torch.testing.assert_close(
            quantization.dynamic_map(signed), bnb.functional.create_dynamic_map(signed=signed), rtol=0, atol=1e-7
        )


@pytest.mark.parametrize("shape", [(256, 80), (300, 70), (64, 1000)])  # (300, 70): a partial last block
def test_states_and_parameters_agree_with_bitsandbytes_over_50_steps(shape):
    (ours, our_state), (theirs, their_state), reference = _run_both(shape, steps=50)
    assert our_state["exp_avg"].codes.dtype == torch.uint8 and their_state["state1"].dtype == torch.uint8
    assert our_state["exp_avg"].maxima.shape == their_state["absmax1"].shape
    for key, index in (("exp_avg", 1), ("exp_avg_sq", 2)):
        mine = storage.load(our_state, key, torch.float32)
        other = _dequantize_bnb(their_state, index)
        scale = other.abs().max()
        assert (mine - other).abs().max() <= 0.05 * scale, key  # measured 0.016-0.032
        assert (mine - other).abs().mean() <= 0.002 * scale, key  # measured about 0.0005
        assert (our_state[key].codes != their_state[f"state{index}"]).float().mean() < 0.15, key  # measured 4-8%
    difference = (ours - theirs).abs()
    assert difference.max() <= 1.5 * LR  # measured 0.68-1.00 lr
    assert difference.mean() <= 0.03 * LR  # measured 0.011-0.014 lr
    # and both are as close to float32 AdamW as to each other (measured 0.86-1.16 lr)
    assert (ours - reference).abs().max() <= 2 * LR
    assert (theirs - reference).abs().max() <= 2 * LR


def test_after_one_step_codes_agree_and_ours_are_never_farther_from_the_exact_state():
    shape = (128, 256)
    (ours, our_state), (theirs, their_state), _ = _run_both(shape, steps=1)
    generator = torch.Generator().manual_seed(0)
    torch.randn(shape, generator=generator)
    grad = torch.randn(shape, generator=generator) * 0.01 + 0.003
    exact = {"exp_avg": 0.1 * grad, "exp_avg_sq": 0.001 * grad * grad}  # Adam's moments after one step
    for key, index in (("exp_avg", 1), ("exp_avg_sq", 2)):
        torch.testing.assert_close(our_state[key].maxima, their_state[f"absmax{index}"], rtol=1e-6, atol=0)
        assert (our_state[key].codes != their_state[f"state{index}"]).float().mean() < 0.05, key  # measured 0.3-3%
        mine = storage.load(our_state, key, torch.float32)
        other = _dequantize_bnb(their_state, index)
        # memopt rounds to the nearest code: never farther from the exact value than bitsandbytes' code
        # (up to ties, where one float32 rounding of the exact value can tip the choice)
        slack = 1e-6 * exact[key].abs().max()
        assert ((mine - exact[key]).abs() <= (other - exact[key]).abs() + slack).all(), key
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-3 * LR)
