"""memopt against the paper-literal reference implementations in tests/reference (float64)."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import make_grads, make_params, run
from tests.reference import naive

import memopt
from memopt.estimators import projectors
from memopt.estimators.subspace_momentum import projector_seed

STEPS = 30


def _memopt_trajectory(factory, shape, grads):
    params = make_params([shape])
    out = []
    optimizer = None
    for g in grads:
        step_params, optimizer = run(factory, params, [[g]], optimizer=optimizer)
        out.append(step_params[0])
    return params[0].detach(), out, optimizer


@pytest.mark.parametrize("subset_size", ["heuristics", 1, 4, 7, -1, -2, 10_000])
@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (6, 6), (4, 3, 5), (30,)])
@pytest.mark.parametrize(
    ("preset", "kwargs", "beta1", "beta2", "bias_correction"),
    [
        (memopt.AdamWSN, dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.1), 0.9, 0.99, True),
        (memopt.AdaGradSN, dict(lr=0.1, betas=(0.9, 1.0), weight_decay=0.05), 0.9, 1.0, False),
        (memopt.RMSPropSN, dict(lr=0.01, betas=(0.0, 0.95)), 0.0, 0.95, False),
    ],
    ids=["adamw_sn", "adagrad_sn", "rmsprop_sn"],
)
@pytest.mark.filterwarnings("ignore:subset_size=10000")
def test_subset_norm_matches_reference(preset, kwargs, beta1, beta2, bias_correction, shape, subset_size):
    grads = [step[0] for step in make_grads([shape], STEPS)]
    theta0, ours, optimizer = _memopt_trajectory(lambda ps: preset(ps, subset_size=subset_size, **kwargs), shape, grads)
    expected, state = naive.subset_norm_run(
        theta0, grads, lr=kwargs["lr"], beta1=beta1, beta2=beta2, eps=1e-8,
        weight_decay=kwargs.get("weight_decay", 0.0), bias_correction=bias_correction, subset_size=subset_size,
    )  # fmt: skip
    for a, e in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    acc = optimizer.state[optimizer.param_groups[0]["params"][0]]["subset_sq"]
    torch.testing.assert_close(acc.reshape(-1), state["exp_avg_sq"].reshape(-1), rtol=1e-10, atol=0)


def test_adagrad_norm_matches_reference():
    shapes = [(6, 5), (7,)]
    grads = make_grads(shapes, STEPS)
    params = make_params(shapes)
    ours, _ = run(lambda ps: memopt.AdaGradNorm(ps, lr=0.3, eps=1e-8, initial_accumulator_value=0.5), params, grads)
    for i, p in enumerate(params):
        expected, _ = naive.adagrad_norm_run(p.detach(), [g[i] for g in grads], lr=0.3, eps=1e-8, b0_sq=0.5)
        torch.testing.assert_close(ours[i], expected[-1], rtol=1e-10, atol=1e-12)
    ours_global, _ = run(lambda ps: memopt.AdaGradNorm(ps, lr=0.3, eps=1e-8, global_norm=True), params, grads)
    expected_global, _ = naive.adagrad_norm_global_run([p.detach() for p in params], grads, lr=0.3, eps=1e-8)
    for a, e in zip(ours_global, expected_global[-1], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def _memopt_draws(proj_type, rank, seed=0, index=0):
    """The bases/indices memopt's random projectors draw, for injection into the reference."""

    def draw(t, g):
        state: dict = {}
        generator = torch.Generator().manual_seed(projector_seed(seed, index, t))
        projectors.build(g, proj_type, rank, state, generator, g.dtype)
        if proj_type == "uniform":
            return state["sm_indices"]
        return state["sm_basis"] if state["sm_layout"] == "right" else state["sm_basis"].T

    return draw


@pytest.mark.parametrize("policy", ["reset", "keep", "transform"])
@pytest.mark.parametrize("proj_type", ["svd", "randomized", "topk", "uniform"])
@pytest.mark.parametrize("shape", [(12, 5), (5, 12)])
@pytest.mark.parametrize(
    ("preset", "kwargs", "beta2", "bias_correction"),
    [
        (memopt.AdamWSNSM, dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.1), 0.99, True),
        (memopt.AdaGradSNSM, dict(lr=0.1, betas=(0.8, 1.0)), 1.0, False),
    ],
    ids=["adamw_snsm", "adagrad_snsm"],
)
def test_subspace_momentum_matches_reference(preset, kwargs, beta2, bias_correction, shape, proj_type, policy):
    rank, gap = 3, 4
    grads = [step[0] for step in make_grads([shape], STEPS)]
    factory = lambda ps: preset(
        ps, rank=rank, update_proj_gap=gap, proj_type=proj_type, proj_policy=policy, subset_size="heuristics", **kwargs
    )
    theta0, ours, optimizer = _memopt_trajectory(factory, shape, grads)
    injected = {}
    if proj_type == "uniform":
        injected["indices_fn"] = _memopt_draws(proj_type, rank)
    elif proj_type == "randomized":
        injected["basis_fn"] = _memopt_draws(proj_type, rank)
    expected, state = naive.subspace_momentum_run(
        theta0, grads, lr=kwargs["lr"], beta1=kwargs["betas"][0], beta2=beta2, eps=1e-8,
        weight_decay=kwargs.get("weight_decay", 0.0), bias_correction=bias_correction, subset_size="heuristics",
        rank=rank, update_proj_gap=gap, proj_type=proj_type, policy=policy, **injected,
    )  # fmt: skip
    for a, e in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-8, atol=1e-10)
    ours_momentum = optimizer.state[optimizer.param_groups[0]["params"][0]]["sm_exp_avg"]
    if proj_type in ("topk", "uniform", "randomized") or policy != "keep":
        # (svd + keep depends on the signs of singular vectors, which two SVD calls need not share)
        torch.testing.assert_close(ours_momentum.abs(), state["exp_avg"].abs(), rtol=1e-8, atol=1e-10)
