"""The optimizer-share report: extrapolation arithmetic and a tiny LLaMA's measurement."""

from __future__ import annotations

import pytest
import torch

from memopt.harness.bench import snsm_share
from memopt.harness.bench.step_time import StepTiming, llama_shapes_model

TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)


def test_shares_divide_by_the_whole_training_step():
    timings = [
        StepTiming("a", 100.0, 1.0),
        StepTiming("b", 300.0, 3.0, refresh_ms=2100.0, amortized_ms=310.0, amortized_ratio=3.1),
    ]
    rows = snsm_share.shares(timings, forward_backward_s=9.9)
    assert [r.name for r in rows] == ["a", "b", "b amortized"]
    assert [r.share for r in rows] == pytest.approx([100 / 10_000, 300 / 10_200, 310 / 10_210])


def test_forward_backward_extrapolates_from_the_larger_microbatch():
    torch.manual_seed(0)
    model = llama_shapes_model(TINY)
    fb = snsm_share.measure_forward_backward(model, 1, 2, rounds=1)
    assert fb.small_s > 0 and fb.large_s > 0
    assert fb.recipe_s == pytest.approx(snsm_share.RECIPE_SEQUENCES / 2 * fb.large_s)
    slope = fb.large_s - fb.small_s
    assert fb.recipe_two_point_s == pytest.approx(fb.small_s + slope * (snsm_share.RECIPE_SEQUENCES - 1))
    assert fb.nonlinearity == pytest.approx(fb.small_s / (fb.large_s / 2) - 1)
    assert all(p.grad is None for p in model.parameters())  # nothing left for the optimizer timing


@pytest.mark.parametrize(("small", "large", "match"), [(4, 2, "0 < small < large"), (2, 3, "must divide")])
def test_invalid_microbatch_sizes_are_refused(small, large, match):
    with pytest.raises(ValueError, match=match):
        snsm_share.measure_forward_backward(llama_shapes_model(TINY), small, large, rounds=1)
