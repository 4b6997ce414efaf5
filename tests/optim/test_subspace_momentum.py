"""Subspace-Momentum: projector algebra, equivalences with plain momentum, refresh and policies."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import assert_all_close, make_grads, make_params, run

import memopt
from memopt.estimators import projectors

PROJ_TYPES = ["svd", "randomized", "topk", "uniform"]


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (6, 6)])
def test_projector_is_an_orthogonal_projection(proj_type, shape):
    generator = torch.Generator().manual_seed(0)
    grad = torch.randn(shape, generator=generator, dtype=torch.float64)
    state: dict = {}
    projectors.build(grad, proj_type, 3, state, torch.Generator().manual_seed(1), torch.float64)
    project = lambda x: projectors.up(projectors.down(x, state), state, shape)
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    once = project(x)
    torch.testing.assert_close(project(once), once, rtol=1e-12, atol=1e-12)  # idempotent
    y = torch.randn(shape, generator=generator, dtype=torch.float64)
    # self-adjoint: <P x, y> = <x, P y>
    torch.testing.assert_close((once * y).sum(), (x * project(y)).sum(), rtol=1e-10, atol=1e-12)
    assert tuple(projectors.down(x, state).shape) == projectors.projected_shape(
        shape, 3, projectors.layout_for(shape, proj_type)
    )


def test_svd_projector_captures_the_top_singular_subspace():
    generator = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(20, 4, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(8, 4, generator=generator, dtype=torch.float64))
    grad = u @ torch.diag(torch.tensor([5.0, 4.0, 1e-3, 1e-4], dtype=torch.float64)) @ v.T
    for proj_type in ("svd", "randomized"):
        state: dict = {}
        projectors.build(grad, proj_type, 2, state, torch.Generator().manual_seed(1), torch.float64)
        residual = grad - projectors.up(projectors.down(grad, state), state, (20, 8))
        assert residual.norm() < 2e-3, proj_type


def test_topk_selects_the_rows_of_largest_norm():
    grad = torch.tensor([[5.0, 0.0], [1.0, 0.0], [0.0, 4.0], [2.0, 0.0]], dtype=torch.float64)
    state: dict = {}
    projectors.build(grad, "topk", 2, state, torch.Generator(), torch.float64)
    assert sorted(state["sm_indices"].tolist()) == [0, 2]
    residual = grad - projectors.up(projectors.down(grad, state), state, (4, 2))
    expected = grad.clone()
    expected[[0, 2]] = 0
    torch.testing.assert_close(residual, expected)


@pytest.mark.parametrize(("proj_type", "rank"), [("svd", 5), ("randomized", 5), ("topk", 12), ("uniform", 12)])
@pytest.mark.parametrize("shape", [(12, 5), (5, 12)])
def test_full_rank_without_refresh_equals_plain_momentum(proj_type, rank, shape):
    rank = min(rank, projectors.max_rank(shape, proj_type))
    params, grads = make_params([shape]), make_grads([shape], 40)
    sm = lambda ps: memopt.AdamWSNSM(ps, lr=0.01, rank=rank, update_proj_gap=1000, proj_type=proj_type)
    plain = lambda ps: memopt.AdamWSN(ps, lr=0.01)
    assert_all_close(run(sm, params, grads)[0], run(plain, params, grads)[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
def test_zero_beta1_equals_no_momentum(proj_type):
    shape = (9, 4)
    params, grads = make_params([shape]), make_grads([shape], 30)
    sm = lambda ps: memopt.AdamWSNSM(ps, lr=0.01, betas=(0.0, 0.99), rank=2, update_proj_gap=7, proj_type=proj_type)
    plain = lambda ps: memopt.AdamWSN(ps, lr=0.01, betas=(0.0, 0.99))
    assert_all_close(run(sm, params, grads)[0], run(plain, params, grads)[0], rtol=1e-12, atol=1e-14)


def test_low_rank_differs_from_plain_momentum():
    shape = (9, 6)
    params, grads = make_params([shape]), make_grads([shape], 10)
    sm, _ = run(lambda ps: memopt.AdamWSNSM(ps, lr=0.01, rank=2), params, grads)
    plain, _ = run(lambda ps: memopt.AdamWSN(ps, lr=0.01), params, grads)
    assert (sm[0] - plain[0]).abs().max() > 1e-4


def test_in_subspace_gradients_get_full_momentum():
    # g_t = U C_t V^T with a fixed rank-2 V: the rank-2 SVD subspace holds every gradient, no residual
    generator = torch.Generator().manual_seed(3)
    u = torch.randn(10, 2, generator=generator, dtype=torch.float64)
    v, _ = torch.linalg.qr(torch.randn(4, 2, generator=generator, dtype=torch.float64))
    grads = [[u @ torch.randn(2, 2, generator=generator, dtype=torch.float64) @ v.T] for _ in range(25)]
    params = make_params([(10, 4)])
    sm = lambda ps: memopt.AdamWSNSM(ps, lr=0.01, rank=2, update_proj_gap=1000)
    plain = lambda ps: memopt.AdamWSN(ps, lr=0.01)
    assert_all_close(run(sm, params, grads)[0], run(plain, params, grads)[0], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("policy", ["reset", "keep", "transform"])
def test_refresh_timeline_and_policies(policy):
    # constant gradient; gap 5: the projector is rebuilt at t = 1, 5, 10
    beta1 = 0.5
    grad = torch.arange(1.0, 13.0, dtype=torch.float64).reshape(4, 3)
    param = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    optimizer = memopt.AdamWSNSM(
        [param], lr=0.0, betas=(beta1, 0.999), rank=2, update_proj_gap=5, proj_type="topk", proj_policy=policy
    )
    state = optimizer.state[param]
    momenta = []
    for _ in range(6):
        param.grad = grad.clone()
        optimizer.step()
        momenta.append(state["sm_exp_avg"].clone())
    selected = grad[state["sm_indices"]]  # topk of a constant gradient: the same rows every time
    ema4 = (1 - beta1**4) * selected
    torch.testing.assert_close(momenta[3], ema4)
    if policy == "reset":  # zeroed before the EMA at t = 5
        torch.testing.assert_close(momenta[4], (1 - beta1) * selected)
    else:  # keep and transform agree when the same rows are selected again
        torch.testing.assert_close(momenta[4], (1 - beta1**5) * selected)


def test_transform_policy_rotates_the_momentum_into_the_new_basis():
    old = {"sm_layout": "right", "sm_basis": torch.eye(4, dtype=torch.float64)[:2]}
    new = {"sm_layout": "right", "sm_basis": torch.eye(4, dtype=torch.float64)[[1, 3]]}
    momentum = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)  # coordinates in e0, e1
    carried = projectors.carry(momentum, old, new)
    # e1 survives (now first coordinate), e0 is dropped, e3 starts at zero
    torch.testing.assert_close(carried, torch.tensor([[2.0, 0.0], [4.0, 0.0]], dtype=torch.float64))
    rows_old = {"sm_layout": "rows", "sm_indices": torch.tensor([0, 2])}
    rows_new = {"sm_layout": "rows", "sm_indices": torch.tensor([2, 3])}
    carried = projectors.carry(torch.tensor([[1.0], [2.0]]), rows_old, rows_new)
    torch.testing.assert_close(carried, torch.tensor([[2.0], [0.0]]))


@pytest.mark.parametrize(
    ("proj_type", "shape", "momentum_shape", "basis_key", "basis_shape"),
    [
        ("svd", (64, 16), (64, 4), "sm_basis", (4, 16)),
        ("svd", (16, 64), (4, 64), "sm_basis", (4, 16)),
        ("topk", (64, 16), (4, 16), "sm_indices", (4,)),
        ("uniform", (16, 64), (16, 4), "sm_indices", (4,)),
    ],
)
def test_state_shapes(proj_type, shape, momentum_shape, basis_key, basis_shape):
    _, optimizer = run(
        lambda ps: memopt.AdamWSNSM(ps, rank=4, proj_type=proj_type), make_params([shape]), make_grads([shape], 1)
    )
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    assert tuple(state["sm_exp_avg"].shape) == momentum_shape
    assert tuple(state[basis_key].shape) == basis_shape
    for value in (state["sm_exp_avg"], state[basis_key]):
        # each state tensor owns exactly its bytes (a view of an SVD factor would keep the factor alive)
        assert value.untyped_storage().nbytes() == value.numel() * value.element_size()


def test_rank_is_clamped_with_a_warning():
    with pytest.warns(UserWarning, match="clamped to 5"):
        memopt.AdamWSNSM([torch.zeros(5, 9, requires_grad=True)], rank=8)


def test_random_projectors_are_reproducible_and_differ_by_seed():
    shape = (10, 6)
    params, grads = make_params([shape]), make_grads([shape], 12)
    factory = lambda seed: (
        lambda ps: memopt.AdamWSNSM(ps, rank=2, update_proj_gap=4, proj_type="uniform", proj_seed=seed)
    )
    a, _ = run(factory(0), params, grads)
    b, _ = run(factory(0), params, grads)
    c, _ = run(factory(1), params, grads)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[0], c[0])
