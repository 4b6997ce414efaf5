"""Property-based tests (hypothesis) over shapes, dtypes and non-contiguous gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers import make_grads, make_params, run
from tests.reference import naive

import memopt

pytestmark = pytest.mark.filterwarnings("ignore:.*clamped")

dims = st.integers(1, 9)
shapes = st.one_of(
    st.just(()),  # 0-d
    st.tuples(dims),  # 1-d
    st.tuples(st.integers(5, 12), st.integers(1, 4)),  # tall
    st.tuples(st.integers(1, 4), st.integers(5, 12)),  # wide
    dims.map(lambda n: (n, n)),  # square
    st.tuples(dims, dims, dims),  # 3-d
    st.tuples(dims, st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),  # 4-d
)
subset_sizes = st.one_of(st.just("heuristics"), st.integers(1, 12), st.integers(-3, -1))

PRESETS = {
    "adamw": lambda ps, **kw: memopt.AdamW(ps, lr=0.01, **kw),
    "adamw_sn": lambda ps, subset_size="heuristics", **kw: memopt.AdamWSN(ps, lr=0.01, subset_size=subset_size, **kw),
    "adagrad_sn": lambda ps, subset_size="heuristics", **kw: memopt.AdaGradSN(
        ps, lr=0.1, subset_size=subset_size, **kw
    ),
    "rmsprop_sn": lambda ps, subset_size="heuristics", **kw: memopt.RMSPropSN(
        ps, lr=0.01, subset_size=subset_size, **kw
    ),
    "adagrad_norm": lambda ps, **kw: memopt.AdaGradNorm(ps, lr=0.1, **kw),
    "adamw_snsm": lambda ps, **kw: memopt.AdamWSNSM(
        ps, lr=0.01, rank=2 if ps[0].ndim == 2 else None, update_proj_gap=3, **kw
    ),
    "adagrad_snsm_topk": lambda ps, **kw: memopt.AdaGradSNSM(
        ps, lr=0.1, rank=2 if ps[0].ndim == 2 else None, update_proj_gap=3, proj_type="topk", **kw
    ),
}
names = st.sampled_from(sorted(PRESETS))


@settings(max_examples=60, deadline=None)
@given(shape=shapes, name=names, dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 1000))
def test_fast_equals_reference_for_any_shape(shape, name, dtype, seed):
    params, grads = make_params([shape], dtype, seed), make_grads([shape], 8, dtype, seed + 1)
    fast, _ = run(lambda ps: PRESETS[name](ps, foreach=True), params, grads)
    reference, _ = run(lambda ps: PRESETS[name](ps, foreach=False), params, grads)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(fast[0], reference[0], rtol=tol, atol=tol)
    assert fast[0].dtype == dtype and fast[0].shape == torch.Size(shape)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, name=names, seed=st.integers(0, 1000))
def test_bfloat16_parameters_follow_the_float64_run(shape, name, seed):
    grads64 = make_grads([shape], 6, torch.float64, seed + 1)
    params64 = make_params([shape], torch.float64, seed)
    params16 = [p.detach().to(torch.bfloat16).requires_grad_() for p in params64]
    grads16 = [[g.to(torch.bfloat16) for g in step] for step in grads64]
    # the float64 run sees exactly the bf16 inputs, so the difference is the bf16 rounding of the updates
    start64 = [p.detach().double().requires_grad_() for p in params16]
    high, _ = run(PRESETS[name], start64, [[g.double() for g in step] for step in grads16])
    low, optimizer = run(PRESETS[name], params16, grads16)
    assert low[0].dtype == torch.bfloat16
    torch.testing.assert_close(low[0].double(), high[0], rtol=2e-2, atol=2e-2)
    for value in optimizer.state[optimizer.param_groups[0]["params"][0]].values():
        if torch.is_tensor(value) and value.is_floating_point():
            assert torch.isfinite(value).all()


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(2, 9), st.integers(2, 9)), name=names, foreach=st.booleans())
def test_non_contiguous_gradients_give_identical_results(shape, name, foreach):
    params = make_params([shape], torch.float32)
    grads = make_grads([shape], 6, torch.float32)
    transposed = [[g.T.contiguous().T for g in step] for step in grads]  # same values, column-major strides
    assert not transposed[0][0].is_contiguous() or shape[1] == 1 or shape[0] == 1
    a, _ = run(lambda ps: PRESETS[name](ps, foreach=foreach), params, grads)
    b, _ = run(lambda ps: PRESETS[name](ps, foreach=foreach), params, transposed)
    assert torch.equal(a[0], b[0])


@settings(max_examples=60, deadline=None)
@given(shape=shapes, subset_size=subset_sizes, seed=st.integers(0, 1000))
def test_subset_norm_matches_the_reference_for_any_shape(shape, subset_size, seed):
    params, grads = make_params([shape], seed=seed), make_grads([shape], 6, seed=seed + 1)
    ours, optimizer = run(lambda ps: memopt.AdamWSN(ps, lr=0.01, subset_size=subset_size), params, grads)
    expected, state = naive.subset_norm_run(
        params[0].detach(), [g[0] for g in grads], lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
        bias_correction=True, subset_size=subset_size,
    )  # fmt: skip
    torch.testing.assert_close(ours[0], expected[-1], rtol=1e-10, atol=1e-12)
    acc = optimizer.state[optimizer.param_groups[0]["params"][0]]["subset_sq"]
    assert acc.numel() == state["exp_avg_sq"].numel()
