"""Self-checks of the naive references against the closed forms and equivalences of ALGORITHMS-memory.md.

These tests never import memopt: they pin down the references themselves (worked values, closed forms,
equivalences between independent code paths, and torch.optim where the semantics coincide).
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.reference.naive import (
    PROJ_TYPES,
    Projector,
    adagrad_norm_global_run,
    adagrad_norm_run,
    adagrad_run,
    adam_run,
    build_projector,
    largest_divisor_at_most,
    subset_norm_run,
    subset_partition,
    subspace_momentum_run,
)

DT = torch.float64


def _randn(*shape: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=DT, generator=gen)


def _grads(shape: tuple[int, ...], steps: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, dtype=DT, generator=gen) for _ in range(steps)]


def _assert_runs_close(a: list, b: list, rtol: float = 1e-12, atol: float = 1e-13):
    assert len(a) == len(b)
    for step, (x, y) in enumerate(zip(a, b, strict=True), start=1):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=lambda m, s=step: f"step {s}: {m}")


def _orthonormal_rows(r: int, n: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(_randn(n, r, seed=seed))
    return q.T  # r x n


# ---------------------------------------------------------------------------------------------------------
# Subset partition (section 1.3)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "subset_size", "k_eff", "num_subsets"),
    [
        ((12,), 5, 4, 3),
        ((13,), 5, 1, 13),
        ((704512,), 419, 344, 2048),
        ((512, 512), -2, 256, 1024),
        ((1376, 512), -2, 344, 2048),
        ((32000, 512), -2, 2000, 8192),
        ((2048, 2048), -2, 1024, 4096),
        ((5461, 2048), -2, 1376, 8128),
        ((512,), -2, 8, 64),
        ((4096,), -2, 32, 128),
        ((6,), 10, 6, 1),  # k > N clamps to N
        ((3,), -2, 1, 3),  # floor(sqrt(3) / 2) = 0 -> target clamped to 1
        ((30,), -2, 2, 15),  # sqrt(30) / 2 = 2.74: truncated to 2, not rounded to 3
        ((4, 4), 1, 1, 16),
    ],
)
def test_divisor_rule_worked_values(shape, subset_size, k_eff, num_subsets):
    layout, k = subset_partition(shape, subset_size)
    assert k == k_eff
    assert layout.kind == "rows"
    assert layout.acc_shape == (num_subsets, 1)
    assert layout.matrix_shape == (num_subsets, k_eff)


@pytest.mark.parametrize(
    ("shape", "kind", "acc_shape", "k_eff"),
    [
        ((6, 3), "rows", (6, 1), 3),
        ((3, 6), "columns", (1, 6), 3),
        ((4, 4), "rows", (4, 1), 4),  # ties count as tall
        ((1376, 512), "rows", (1376, 1), 512),
        ((512, 1376), "columns", (1, 1376), 512),
        ((2, 3, 4), "columns", (1, 12), 2),  # reshaped to (2, 12): wide
        ((8, 2, 2), "rows", (8, 1), 4),  # reshaped to (8, 4): tall
        ((5,), "coordinate", (5,), 1),
        ((), "coordinate", (), 1),
    ],
)
def test_heuristics_layout(shape, kind, acc_shape, k_eff):
    layout, k = subset_partition(shape, "heuristics")
    assert (layout.kind, layout.acc_shape, k) == (kind, acc_shape, k_eff)


def test_none_is_coordinatewise():
    layout, k = subset_partition((3, 4), None)
    assert (layout.kind, layout.acc_shape, k) == ("coordinate", (3, 4), 1)


@pytest.mark.parametrize("bad", [0, "rows", 1.5, True])
def test_invalid_subset_size(bad):
    with pytest.raises(ValueError):
        subset_partition((4, 4), bad)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), k=st.integers(1, 6000))
def test_divisor_rule_definition(n, k):
    d = largest_divisor_at_most(n, k)
    assert n % d == 0
    assert 1 <= d <= min(n, k)
    assert all(n % e != 0 for e in range(d + 1, min(n, k) + 1))


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 7), min_size=0, max_size=3).map(tuple),
    subset_size=st.one_of(st.none(), st.just("heuristics"), st.integers(1, 60), st.integers(-4, -1)),
)
def test_subsets_partition_every_coordinate_once(shape, subset_size):
    layout, k = subset_partition(shape, subset_size)
    subsets = layout.subsets()
    assert len(subsets) == layout.num_subsets
    assert all(len(s) == k for s in subsets)
    flat = sorted(i for s in subsets for i in s.tolist())
    assert flat == list(range(math.prod(shape)))


def test_integer_subsets_are_contiguous_chunks():
    layout, k = subset_partition((4, 6), 8)  # N = 24, k' = 8: chunks straddle matrix rows
    assert k == 8
    assert [s.tolist() for s in layout.subsets()] == [list(range(i, i + 8)) for i in (0, 8, 16)]


# ---------------------------------------------------------------------------------------------------------
# Adam / AdaGrad references against torch.optim (semantics coincide there)
# ---------------------------------------------------------------------------------------------------------


def _torch_run(opt_cls, theta0, grads, **kwargs):
    p = torch.nn.Parameter(theta0.clone())
    opt = opt_cls([p], **kwargs)
    out = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        out.append(p.detach().clone())
    return out, opt.state[p]


@pytest.mark.parametrize(("beta1", "wd"), [(0.9, 0.0), (0.9, 0.1), (0.0, 0.05)])
def test_adam_run_matches_torch_adamw(beta1, wd):
    theta0, grads = _randn(3, 5, seed=1), _grads((3, 5), 12, seed=2)
    kw = dict(lr=0.03, eps=1e-3)
    ours, state = adam_run(theta0, grads, beta1=beta1, beta2=0.95, weight_decay=wd, **kw)
    ref, tstate = _torch_run(torch.optim.AdamW, theta0, grads, betas=(beta1, 0.95), weight_decay=wd, **kw)
    _assert_runs_close(ours, ref)
    torch.testing.assert_close(state["exp_avg_sq"], tstate["exp_avg_sq"], rtol=1e-12, atol=0)
    if beta1 > 0:
        torch.testing.assert_close(state["exp_avg"], tstate["exp_avg"], rtol=1e-12, atol=0)
    else:
        assert "exp_avg" not in state


@pytest.mark.parametrize(("wd", "init"), [(0.0, 0.0), (0.1, 0.5)])
def test_adagrad_run_matches_torch_adagrad(wd, init):
    theta0, grads = _randn(4, 3, seed=3), _grads((4, 3), 10, seed=4)
    kw = dict(lr=0.1, eps=1e-10, weight_decay=wd, initial_accumulator_value=init)
    ours, state = adagrad_run(theta0, grads, **kw)
    ref, tstate = _torch_run(torch.optim.Adagrad, theta0, grads, **kw)
    _assert_runs_close(ours, ref)
    torch.testing.assert_close(state["sum"], tstate["sum"], rtol=1e-12, atol=0)
    assert state["step"] == 10


# ---------------------------------------------------------------------------------------------------------
# Subset-Norm equivalences and closed forms (sections 1.10 and 3.4)
# ---------------------------------------------------------------------------------------------------------

SN_CONFIGS = [
    dict(beta1=0.9, beta2=0.999, bias_correction=True, weight_decay=0.1),
    dict(beta1=0.0, beta2=0.99, bias_correction=False, weight_decay=0.0),
    dict(beta1=0.9, beta2=1.0, bias_correction=False, weight_decay=0.0),
    dict(beta1=0.0, beta2=1.0, bias_correction=False, weight_decay=0.01),
    dict(beta1=0.8, beta2=1.0, bias_correction=True, weight_decay=0.0),  # only bc1 applies
    dict(beta1=0.0, beta2=0.9, bias_correction=True, weight_decay=0.0),  # only bc2 applies
]


@pytest.mark.parametrize("config", SN_CONFIGS)
@pytest.mark.parametrize(("shape", "subset_size"), [((3, 4), 1), ((3, 4), None), ((7,), "heuristics")])
def test_subset_size_one_is_adam(config, shape, subset_size):
    theta0, grads = _randn(*shape, seed=5), _grads(shape, 15, seed=6)
    kw = dict(lr=0.02, eps=1e-4, **config)
    sn, sn_state = subset_norm_run(theta0, grads, subset_size=subset_size, **kw)
    ad, ad_state = adam_run(theta0, grads, **kw)
    _assert_runs_close(sn, ad)
    torch.testing.assert_close(sn_state["exp_avg_sq"].reshape(shape), ad_state["exp_avg_sq"])
    assert ("exp_avg" in sn_state) == (config["beta1"] > 0)


def test_adagrad_is_sn_subset_one_without_momentum():
    theta0, grads = _randn(2, 5, seed=7), _grads((2, 5), 10, seed=8)
    ours, _ = subset_norm_run(
        theta0,
        grads,
        lr=0.1,
        beta1=0.0,
        beta2=1.0,
        eps=1e-6,
        weight_decay=0.0,
        bias_correction=False,
        subset_size=1,
    )
    ref, _ = adagrad_run(theta0, grads, lr=0.1, eps=1e-6)
    _assert_runs_close(ours, ref)


@pytest.mark.parametrize("subset_size", [15, 100])
def test_whole_tensor_subset_is_adagrad_norm(subset_size):
    theta0, grads = _randn(3, 5, seed=9), _grads((3, 5), 12, seed=10)
    sn, sn_state = subset_norm_run(
        theta0,
        grads,
        lr=0.5,
        beta1=0.0,
        beta2=1.0,
        eps=1e-6,
        weight_decay=0.0,
        bias_correction=False,
        subset_size=subset_size,
    )
    agn, agn_state = adagrad_norm_run(theta0, grads, lr=0.5, eps=1e-6)
    _assert_runs_close(sn, agn)
    torch.testing.assert_close(sn_state["exp_avg_sq"].reshape(()), agn_state["b_sq"])
    expected_b_sq = sum((g**2).sum() for g in grads)
    torch.testing.assert_close(agn_state["b_sq"], expected_b_sq)


@pytest.mark.parametrize("c", [0.7, -1.3])
def test_adagrad_norm_constant_gradient_closed_form(c):
    shape, steps, lr, eps = (4, 3), 8, 0.3, 1e-3
    n = math.prod(shape)
    theta0 = _randn(*shape, seed=11)
    grads = [torch.full(shape, c, dtype=DT) for _ in range(steps)]
    agn, _ = adagrad_norm_run(theta0, grads, lr=lr, eps=eps)
    sn, _ = subset_norm_run(
        theta0,
        grads,
        lr=lr,
        beta1=0.0,
        beta2=1.0,
        eps=eps,
        weight_decay=0.0,
        bias_correction=False,
        subset_size=n,
    )
    for run in (agn, sn):
        prev = theta0
        for t, theta in enumerate(run, start=1):
            expected_move = lr * c / (abs(c) * math.sqrt(t * n) + eps)
            torch.testing.assert_close(prev - theta, torch.full(shape, expected_move, dtype=DT))
            prev = theta


@pytest.mark.parametrize(("shape", "subset_len"), [((6, 3), 3), ((3, 6), 3), ((5, 2), 2)])
@pytest.mark.parametrize("c", [0.5, -2.0])
def test_adagrad_sn_heuristics_constant_gradient_closed_form(shape, subset_len, c):
    steps, lr, eps = 7, 0.2, 1e-2
    theta0 = _randn(*shape, seed=12)
    grads = [torch.full(shape, c, dtype=DT) for _ in range(steps)]
    run, _ = subset_norm_run(
        theta0,
        grads,
        lr=lr,
        beta1=0.0,
        beta2=1.0,
        eps=eps,
        weight_decay=0.0,
        bias_correction=False,
        subset_size="heuristics",
    )
    prev = theta0
    for t, theta in enumerate(run, start=1):
        step = lr * abs(c) / (abs(c) * math.sqrt(t * subset_len) + eps)
        torch.testing.assert_close(prev - theta, torch.full(shape, math.copysign(step, c), dtype=DT))
        prev = theta


@pytest.mark.parametrize("beta2", [1.0, 0.9])
@pytest.mark.parametrize(("shape", "dim"), [((6, 3), 1), ((3, 6), 0), ((4, 4), 1)])
def test_heuristics_accumulators_are_row_or_column_sums(beta2, shape, dim):
    theta0, grads = _randn(*shape, seed=13), _grads(shape, 6, seed=14)
    _, state = subset_norm_run(
        theta0,
        grads,
        lr=0.01,
        beta1=0.9,
        beta2=beta2,
        eps=1e-8,
        weight_decay=0.0,
        bias_correction=False,
        subset_size="heuristics",
    )
    expected = torch.zeros(1, dtype=DT)
    for g in grads:
        s = (g**2).sum(dim=dim, keepdim=True)
        expected = expected + s if beta2 == 1.0 else beta2 * expected + (1 - beta2) * s
    assert state["exp_avg_sq"].shape == expected.shape == ((shape[0], 1) if dim == 1 else (1, shape[1]))
    torch.testing.assert_close(state["exp_avg_sq"], expected)


def test_square_heuristics_equals_integer_subset_of_row_length():
    d = 5
    theta0, grads = _randn(d, d, seed=15), _grads((d, d), 8, seed=16)
    kw = dict(lr=0.05, beta1=0.9, beta2=0.99, eps=1e-6, weight_decay=0.01, bias_correction=True)
    heur, hs = subset_norm_run(theta0, grads, subset_size="heuristics", **kw)
    integer, is_ = subset_norm_run(theta0, grads, subset_size=d, **kw)
    _assert_runs_close(heur, integer)
    torch.testing.assert_close(hs["exp_avg_sq"], is_["exp_avg_sq"])


def test_first_step_weight_decay_before_update_and_pytorch_bias_correction():
    # t = 1 with bias correction: m_hat = g, sqrt(v_hat) = sqrt(S_row), eps outside the corrected root;
    # decay multiplies the *old* parameter.
    shape, lr, wd, eps, beta1, beta2 = (4, 2), 0.1, 0.5, 0.3, 0.9, 0.99
    theta0, g = _randn(*shape, seed=17), _randn(*shape, seed=18)
    run, _ = subset_norm_run(
        theta0,
        [g],
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=wd,
        bias_correction=True,
        subset_size="heuristics",
    )
    row_norm = (g**2).sum(dim=1, keepdim=True).sqrt()
    expected = theta0 * (1 - lr * wd) - lr * g / (row_norm + eps)
    torch.testing.assert_close(run[0], expected)
    root_bc2 = math.sqrt(1 - beta2)
    hf_style = theta0 * (1 - lr * wd) - lr * root_bc2 * g / (root_bc2 * row_norm + eps)
    assert not torch.allclose(run[0], hf_style)


def test_adagrad_sum_with_bias_correction_uses_only_bc1():
    shape, lr, eps, beta1 = (3, 3), 0.1, 1e-3, 0.8
    theta0, g = _randn(*shape, seed=19), _randn(*shape, seed=20)
    run, _ = subset_norm_run(
        theta0,
        [g],
        lr=lr,
        beta1=beta1,
        beta2=1.0,
        eps=eps,
        weight_decay=0.0,
        bias_correction=True,
        subset_size=None,
    )
    torch.testing.assert_close(run[0], theta0 - lr * g / (g.abs() + eps))


def test_global_adagrad_norm_single_tensor_matches_per_tensor():
    theta0, grads = _randn(3, 4, seed=21), _grads((3, 4), 9, seed=22)
    per, per_state = adagrad_norm_run(theta0, grads, lr=0.2, eps=1e-8, b0_sq=0.5)
    glob, glob_state = adagrad_norm_global_run([theta0], [[g] for g in grads], lr=0.2, eps=1e-8, b0_sq=0.5)
    _assert_runs_close(per, [step[0] for step in glob])
    torch.testing.assert_close(per_state["b_sq"], glob_state["b_sq"])


def test_global_adagrad_norm_two_tensors_closed_form():
    a, b, n1, n2, lr, eps, steps = 0.5, 3.0, 6, 4, 0.1, 1e-6, 5
    th1, th2 = _randn(n1, seed=23), _randn(2, 2, seed=24)
    grads = [[torch.full((n1,), a, dtype=DT), torch.full((2, 2), b, dtype=DT)] for _ in range(steps)]
    glob, _ = adagrad_norm_global_run([th1, th2], grads, lr=lr, eps=eps)
    per1, _ = adagrad_norm_run(th1, [g[0] for g in grads], lr=lr, eps=eps)
    prev1, prev2 = th1, th2
    for t, (x1, x2) in enumerate(glob, start=1):
        root = math.sqrt(t * (n1 * a * a + n2 * b * b))
        torch.testing.assert_close(prev1 - x1, torch.full((n1,), lr * a / (root + eps), dtype=DT))
        torch.testing.assert_close(prev2 - x2, torch.full((2, 2), lr * b / (root + eps), dtype=DT))
        prev1, prev2 = x1, x2
    # per-tensor: tensor 1 only sees its own (smaller) gradient norm, so it moves further
    move_per = th1 - per1[0]
    torch.testing.assert_close(move_per, torch.full((n1,), lr * a / (a * math.sqrt(n1) + eps), dtype=DT))
    assert float(move_per[0]) > float((th1 - glob[0][0])[0]) * 1.5


# ---------------------------------------------------------------------------------------------------------
# Subspace momentum (section 2.10)
# ---------------------------------------------------------------------------------------------------------


def _sm(theta0, grads, **overrides):
    kw = dict(
        lr=0.05,
        beta1=0.9,
        beta2=0.99,
        eps=1e-6,
        weight_decay=0.0,
        bias_correction=True,
        subset_size="heuristics",
        rank=2,
        update_proj_gap=100,
        proj_type="svd",
        policy="reset",
        seed=0,
    )
    kw.update(overrides)
    return subspace_momentum_run(theta0, grads, **kw)


def _sn_same(theta0, grads, **overrides):
    kw = dict(
        lr=0.05,
        beta1=0.9,
        beta2=0.99,
        eps=1e-6,
        weight_decay=0.0,
        bias_correction=True,
        subset_size="heuristics",
    )
    kw.update(overrides)
    return subset_norm_run(theta0, grads, **kw)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
@pytest.mark.parametrize(
    ("proj_type", "gap", "policy"),
    [
        ("svd", 100, "reset"),
        ("randomized", 100, "reset"),
        ("topk", 100, "reset"),
        ("uniform", 100, "reset"),
        ("svd", 3, "transform"),  # full-rank rebuilds carried exactly into the new basis
        ("topk", 3, "transform"),
        ("uniform", 3, "transform"),
    ],
)
@pytest.mark.parametrize("subset_size", ["heuristics", None])
def test_full_rank_subspace_momentum_is_plain_momentum(shape, proj_type, gap, policy, subset_size):
    theta0, grads = _randn(*shape, seed=25), _grads(shape, 10, seed=26)
    rank = min(shape) if proj_type in ("svd", "randomized") else max(shape)
    trace: list[dict] = []
    sm, sm_state = _sm(
        theta0,
        grads,
        proj_type=proj_type,
        rank=rank,
        update_proj_gap=gap,
        policy=policy,
        subset_size=subset_size,
        weight_decay=0.1,
        trace=trace,
    )
    sn, sn_state = _sn_same(theta0, grads, subset_size=subset_size, weight_decay=0.1)
    _assert_runs_close(sm, sn, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sm_state["exp_avg_sq"], sn_state["exp_avg_sq"])
    for entry in trace:
        torch.testing.assert_close(entry["residual"], torch.zeros(shape, dtype=DT), rtol=0, atol=1e-12)


def test_full_rank_keep_policy_with_reordered_topk_is_not_plain_momentum():
    # guard: the previous test can fail. topk order changes between rebuilds, 'keep' mixes rows.
    gen = torch.Generator().manual_seed(27)
    grads = [
        torch.randn(4, 3, dtype=DT, generator=gen)
        * torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=DT).roll(t, dims=0)
        for t in range(6)
    ]
    theta0 = _randn(4, 3, seed=28)
    sm, _ = _sm(theta0, grads, proj_type="topk", rank=4, update_proj_gap=2, policy="keep")
    sn, _ = _sn_same(theta0, grads)
    assert not torch.allclose(sm[-1], sn[-1])


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
@pytest.mark.parametrize("policy", ["reset", "keep", "transform"])
@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
def test_beta1_zero_numerator_is_gradient(proj_type, policy, shape):
    theta0, grads = _randn(*shape, seed=29), _grads(shape, 7, seed=30)
    trace: list[dict] = []
    sm, _ = _sm(theta0, grads, beta1=0.0, proj_type=proj_type, rank=2, update_proj_gap=3, policy=policy, trace=trace)
    for g, entry in zip(grads, trace, strict=True):
        torch.testing.assert_close(entry["numerator"], g, rtol=0, atol=1e-12)
    assert [e["rebuilt"] for e in trace] == [True, False, True, False, False, True, False]
    sn, _ = _sn_same(theta0, grads, beta1=0.0)
    _assert_runs_close(sm, sn, rtol=1e-10, atol=1e-12)


def _projectors(shape: tuple[int, int], rank: int) -> list[Projector]:
    m, n = shape
    g = _randn(m, n, seed=31)
    tall = m >= n
    fixed_basis = _orthonormal_rows(rank, n, seed=32) if tall else _orthonormal_rows(rank, m, seed=32).T
    return [
        build_projector("svd", g, rank),
        build_projector("topk", g, rank),
        build_projector("uniform", g, rank, indices_fn=lambda t, G: torch.tensor([3, 0, 1][:rank])),
        build_projector("uniform", g, rank, generator=torch.Generator().manual_seed(1)),
        build_projector("randomized", g, rank, basis_fn=lambda t, G: fixed_basis),
        build_projector("randomized", g, rank, generator=torch.Generator().manual_seed(2)),
    ]


@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
def test_back_projection_of_projection_is_an_orthogonal_projector(shape):
    x = _randn(*shape, seed=33)
    for proj in _projectors(shape, rank=3):
        px = proj.back_project(proj.project(x))
        torch.testing.assert_close(proj.back_project(proj.project(px)), px, rtol=0, atol=1e-12)
        assert abs(float(((x - px) * px).sum())) < 1e-12
        assert float((px**2).sum()) > 1e-3  # not the trivial zero projector
        z = _randn(*proj.project(x).shape, seed=34)
        torch.testing.assert_close(proj.project(proj.back_project(z)), z, rtol=0, atol=1e-12)


def test_svd_projector_keeps_top_singular_directions():
    g = _randn(6, 4, seed=35)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    proj = build_projector("svd", g, 2)
    best_rank2 = u[:, :2] @ torch.diag(s[:2]) @ vh[:2, :]
    torch.testing.assert_close(proj.back_project(proj.project(g)), best_rank2)


@pytest.mark.parametrize("wide", [False, True])
def test_topk_worked_example(wide):
    directions = _randn(4, 3, seed=36)
    directions = directions / directions.norm(dim=1, keepdim=True)
    g = directions * torch.tensor([[5.0], [1.0], [4.0], [2.0]], dtype=DT)  # row norms 5, 1, 4, 2
    if wide:
        g = g.T.contiguous()
    trace: list[dict] = []
    _, state = _sm(torch.zeros_like(g), [g], proj_type="topk", rank=2, trace=trace)
    assert state["indices"].tolist() == [0, 2]
    assert state["side"] == ("columns" if wide else "rows")
    expected_residual = g.clone()
    if wide:
        expected_residual[:, [0, 2]] = 0.0
    else:
        expected_residual[[0, 2], :] = 0.0
    torch.testing.assert_close(trace[0]["residual"], expected_residual, rtol=0, atol=0)
    torch.testing.assert_close(state["exp_avg"], (0.1 * (g[:, [0, 2]] if wide else g[[0, 2], :])))


@pytest.mark.parametrize("proj_type", ["svd", "topk", "uniform"])
def test_refresh_timeline_and_reset_vs_keep_with_constant_gradient(proj_type):
    beta1, steps = 0.9, 12
    g = _randn(6, 4, seed=37)
    theta0 = _randn(6, 4, seed=38)
    indices_fn = (lambda t, G: torch.tensor([4, 1])) if proj_type == "uniform" else None
    traces: dict[str, list[dict]] = {}
    for policy in ("reset", "keep", "transform"):
        traces[policy] = []
        _sm(
            theta0,
            [g] * steps,
            beta1=beta1,
            proj_type=proj_type,
            rank=2,
            update_proj_gap=5,
            policy=policy,
            indices_fn=indices_fn,
            trace=traces[policy],
        )
        assert [e["t"] for e in traces[policy] if e["rebuilt"]] == [1, 5, 10]
    pg = traces["reset"][0]["projector"].project(g)
    # the same g gives the same projector at every rebuild
    for e in traces["reset"]:
        torch.testing.assert_close(e["projector"].project(g), pg, rtol=0, atol=0)
    torch.testing.assert_close(traces["reset"][4]["exp_avg"], (1 - beta1) * pg)  # t = 5: fresh EMA
    torch.testing.assert_close(traces["reset"][3]["exp_avg"], (1 - beta1**4) * pg)
    torch.testing.assert_close(traces["reset"][9]["exp_avg"], (1 - beta1) * pg)  # t = 10
    torch.testing.assert_close(traces["reset"][8]["exp_avg"], (1 - beta1**5) * pg)  # t = 9: 5 EMAs since t=5
    for t in range(1, steps + 1):
        torch.testing.assert_close(traces["keep"][t - 1]["exp_avg"], (1 - beta1**t) * pg)
        torch.testing.assert_close(traces["transform"][t - 1]["exp_avg"], (1 - beta1**t) * pg)


def test_transform_policy_follows_a_rotating_svd_basis():
    # gradients in a fixed r-dim row space; each rebuild returns a different basis of that space
    m, n, r, steps = 7, 5, 2, 9
    v = _orthonormal_rows(r, n, seed=39)
    grads = [_randn(m, r, seed=40 + t) @ v for t in range(steps)]
    theta0 = _randn(m, n, seed=50)
    sn, _ = _sn_same(theta0, grads)
    tr, _ = _sm(theta0, grads, rank=r, update_proj_gap=3, policy="transform")
    _assert_runs_close(tr, sn, rtol=1e-10, atol=1e-12)
    reset, _ = _sm(theta0, grads, rank=r, update_proj_gap=3, policy="reset")
    assert not torch.allclose(reset[-1], sn[-1])
    keep, _ = _sm(theta0, grads, rank=r, update_proj_gap=3, policy="keep")
    assert not torch.allclose(keep[-1], sn[-1])


def test_transform_policy_left_projection():
    m, n, r, steps = 4, 7, 2, 8
    u = _orthonormal_rows(r, m, seed=51).T
    grads = [u @ _randn(r, n, seed=52 + t) for t in range(steps)]
    theta0 = _randn(m, n, seed=60)
    sn, _ = _sn_same(theta0, grads)
    tr, state = _sm(theta0, grads, rank=r, update_proj_gap=3, policy="transform")
    assert state["side"] == "left" and state["basis"].shape == (m, r) and state["exp_avg"].shape == (r, n)
    _assert_runs_close(tr, sn, rtol=1e-10, atol=1e-12)


def test_transform_policy_selection_moves_rows_to_new_slots():
    # gradient supported on rows {1, 3, 5}; their norm order changes between rebuilds
    m, n, steps = 6, 3, 8
    grads = []
    for t in range(steps):
        g = torch.zeros(m, n, dtype=DT)
        scales = [1.0, 2.0, 3.0]
        for row, s in zip((1, 3, 5), scales[t % 3 :] + scales[: t % 3], strict=True):
            g[row] = s * (1 + _randn(n, seed=70 + 10 * t + row).abs())
        grads.append(g)
    theta0 = _randn(m, n, seed=99)
    sn, _ = _sn_same(theta0, grads)
    tr, _ = _sm(theta0, grads, proj_type="topk", rank=3, update_proj_gap=2, policy="transform")
    _assert_runs_close(tr, sn, rtol=1e-10, atol=1e-12)
    keep, _ = _sm(theta0, grads, proj_type="topk", rank=3, update_proj_gap=2, policy="keep")
    assert not torch.allclose(keep[-1], sn[-1])


@pytest.mark.parametrize(
    ("proj_type", "shape", "momentum_shape", "side", "projector_key", "projector_shape"),
    [
        ("svd", (64, 16), (64, 4), "right", "basis", (4, 16)),
        ("svd", (16, 64), (4, 64), "left", "basis", (16, 4)),
        ("randomized", (64, 16), (64, 4), "right", "basis", (4, 16)),
        ("topk", (64, 16), (4, 16), "rows", "indices", (4,)),
        ("topk", (16, 64), (16, 4), "columns", "indices", (4,)),
        ("uniform", (64, 16), (4, 16), "rows", "indices", (4,)),
    ],
)
def test_state_shapes(proj_type, shape, momentum_shape, side, projector_key, projector_shape):
    theta0, grads = _randn(*shape, seed=80), _grads(shape, 2, seed=81)
    _, state = _sm(theta0, grads, proj_type=proj_type, rank=4)
    assert state["step"] == 2
    assert state["side"] == side
    assert tuple(state["exp_avg"].shape) == momentum_shape
    assert tuple(state[projector_key].shape) == projector_shape
    assert tuple(state["exp_avg_sq"].shape) == ((max(shape), 1) if shape[0] >= shape[1] else (1, max(shape)))


def test_sm_first_step_decay_before_update_and_bc1_on_whole_numerator():
    shape, lr, wd, beta1 = (5, 3), 0.1, 0.5, 0.9
    theta0, g = _randn(*shape, seed=82), _randn(*shape, seed=83)
    trace: list[dict] = []
    run, _ = _sm(theta0, [g], lr=lr, weight_decay=wd, beta1=beta1, subset_size=None, eps=0.0, rank=2, trace=trace)
    proj = trace[0]["projector"]
    in_span = proj.back_project(proj.project(g))
    residual = g - in_span
    assert float(residual.abs().max()) > 1e-3
    # t = 1: sqrt(V / bc2) = |g|; N = (1 - beta1) P*Pg + R and lr / bc1 scales all of N (the SGD term too)
    expected = theta0 * (1 - lr * wd) - lr * (in_span + residual / (1 - beta1)) / g.abs()
    torch.testing.assert_close(run[0], expected)


def test_rank_is_clamped_with_a_warning():
    g = _randn(5, 3, seed=84)
    with pytest.warns(UserWarning):
        assert build_projector("svd", g, 4).basis.shape == (3, 3)
    with pytest.warns(UserWarning):
        assert build_projector("topk", g, 9).indices.shape == (5,)


def test_sm_rejects_non_matrix_and_unknown_options():
    with pytest.raises(ValueError):
        _sm(_randn(6, seed=85), _grads((6,), 1, seed=86))
    with pytest.raises(ValueError):
        _sm(_randn(4, 3, seed=87), _grads((4, 3), 1, seed=88), policy="overlap")
    with pytest.raises(ValueError):
        _sm(_randn(4, 3, seed=87), _grads((4, 3), 1, seed=88), proj_type="srht")
