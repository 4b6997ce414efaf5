"""Subset-Norm: equivalences with coordinate-wise methods and AdaGrad-Norm, and its accumulators."""

from __future__ import annotations

import math

import pytest
import torch
from tests.helpers import assert_all_close, make_grads, make_params, run

import memopt
from memopt.estimators.subset_norm import effective_subset_size, subset_partition

SHAPES = [(6, 4), (3, 9), (5,), (2, 3, 4)]


def test_subset_size_one_is_adamw():
    params, grads = make_params(SHAPES), make_grads(SHAPES, 100)
    expected, _ = run(lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1), params, grads)
    actual, _ = run(lambda ps: memopt.AdamWSN(ps, lr=0.01, weight_decay=0.1, subset_size=1), params, grads)
    assert_all_close(actual, expected, rtol=1e-10)


def test_subset_size_one_is_adagrad():
    params, grads = make_params(SHAPES), make_grads(SHAPES, 100)
    expected, _ = run(lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10), params, grads)
    actual, _ = run(lambda ps: memopt.AdaGradSN(ps, lr=0.1, eps=1e-10, betas=(0.0, 1.0), subset_size=1), params, grads)
    assert_all_close(actual, expected, rtol=1e-10)


def test_subset_size_one_is_rmsprop():
    params, grads = make_params(SHAPES), make_grads(SHAPES, 100)
    expected, _ = run(lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.95), params, grads)
    actual, _ = run(lambda ps: memopt.RMSPropSN(ps, lr=0.01, betas=(0.0, 0.95), subset_size=1), params, grads)
    assert_all_close(actual, expected, rtol=1e-10)


@pytest.mark.parametrize("global_norm", [False, True])
def test_one_subset_per_tensor_is_adagrad_norm(global_norm):
    shapes = [(6, 4)]  # a single tensor: the per-tensor and the global scalar coincide
    params, grads = make_params(shapes), make_grads(shapes, 100)
    sn = lambda ps: memopt.AdaGradSN(ps, lr=0.5, betas=(0.0, 1.0), eps=1e-8, subset_size=24)
    norm = lambda ps: memopt.AdaGradNorm(ps, lr=0.5, eps=1e-8, global_norm=global_norm)
    assert_all_close(run(sn, params, grads)[0], run(norm, params, grads)[0], rtol=1e-10)


def test_adagrad_norm_closed_form_constant_gradient():
    # g = c * 1 in R^N: step t moves every coordinate by lr * c / (|c| sqrt(t N) + eps)
    n, c, lr, eps = 12, -0.7, 0.3, 1e-8
    param = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    optimizer = memopt.AdaGradNorm([param], lr=lr, eps=eps)
    expected = 0.0
    for t in range(1, 21):
        param.grad = torch.full((n,), c, dtype=torch.float64)
        optimizer.step()
        expected -= lr * c / (abs(c) * math.sqrt(t * n) + eps)
        torch.testing.assert_close(param.detach(), torch.full((n,), expected, dtype=torch.float64), rtol=1e-12, atol=0)


def test_global_adagrad_norm_uses_the_norm_over_all_tensors():
    shapes = [(5, 3), (4,)]
    params, grads = make_params(shapes), make_grads(shapes, 10)
    lr, eps = 0.2, 1e-8
    actual, optimizer = run(lambda ps: memopt.AdaGradNorm(ps, lr=lr, eps=eps, global_norm=True), params, grads)
    expected = [p.detach().clone() for p in params]
    total = 0.0
    for step_grads in grads:
        total += sum(float(g.square().sum()) for g in step_grads)
        expected = [p - lr * g / (math.sqrt(total) + eps) for p, g in zip(expected, step_grads)]
    assert_all_close(actual, expected, rtol=1e-12)
    first = optimizer.param_groups[0]["params"][0]
    assert optimizer.state[first]["global_norm_sq"].item() == pytest.approx(total, rel=1e-6)
    # per tensor, the two tensors would have moved differently
    per_tensor, _ = run(lambda ps: memopt.AdaGradNorm(ps, lr=lr, eps=eps), params, grads)
    assert not torch.allclose(per_tensor[0], actual[0])


@pytest.mark.parametrize(("shape", "acc_shape", "dim"), [((6, 3), (6, 1), 1), ((3, 6), (1, 6), 0), ((4, 4), (4, 1), 1)])
def test_heuristics_accumulators_are_row_or_column_sums(shape, acc_shape, dim):
    params, grads = make_params([shape]), make_grads([shape], 7)
    _, optimizer = run(lambda ps: memopt.AdaGradSN(ps, betas=(0.0, 1.0)), params, grads)
    acc = optimizer.state[optimizer.param_groups[0]["params"][0]]["subset_sq"]
    assert tuple(acc.shape) == acc_shape
    expected = sum(g[0].square().sum(dim=dim, keepdim=True) for g in grads)
    torch.testing.assert_close(acc, expected, rtol=1e-12, atol=0)


def test_heuristics_constant_gradient_closed_form():
    # AdaGrad-SN on a tall m x n matrix with a constant gradient c: each entry moves lr*|c|/(|c| sqrt(t n) + eps)
    m, n, c, lr, eps = 8, 3, 0.5, 0.1, 1e-8
    param = torch.zeros(m, n, dtype=torch.float64, requires_grad=True)
    optimizer = memopt.AdaGradSN([param], lr=lr, betas=(0.0, 1.0), eps=eps)
    position = 0.0
    for t in range(1, 11):
        param.grad = torch.full((m, n), c, dtype=torch.float64)
        optimizer.step()
        position -= lr * c / (abs(c) * math.sqrt(t * n) + eps)
        assert torch.allclose(param.detach(), torch.full((m, n), position, dtype=torch.float64), rtol=1e-12, atol=0)


def test_heuristics_on_a_square_matrix_equals_row_chunks():
    shapes = [(5, 5)]
    params, grads = make_params(shapes), make_grads(shapes, 30)
    heuristic, _ = run(lambda ps: memopt.AdamWSN(ps, lr=0.01, subset_size="heuristics"), params, grads)
    chunks, _ = run(lambda ps: memopt.AdamWSN(ps, lr=0.01, subset_size=5), params, grads)
    assert_all_close(heuristic, chunks, rtol=1e-12)


@pytest.mark.parametrize(
    ("shape", "subset_size", "expected"),
    [
        ((12,), 5, 4),
        ((13,), 5, 1),
        ((1376, 512), 419, 344),
        ((4096,), -2, 32),
        ((512, 512), -2, 256),
        ((1376, 512), -2, 344),
        ((32000, 512), -2, 2000),
        ((2048, 2048), -2, 1024),
        ((5461, 2048), -2, 1376),
        ((512,), -2, 8),
        ((3,), -2, 1),
        ((7,), 100, 7),
        ((1376, 512), "heuristics", 512),
        ((512, 1376), "heuristics", 512),
        ((4, 3, 5), "heuristics", 4),
        ((9,), "heuristics", 1),
        ((), "heuristics", 1),
    ],
)
def test_partition_rules(shape, subset_size, expected):
    assert effective_subset_size(shape, subset_size) == expected
    (a, b), _ = subset_partition(shape, subset_size)
    assert a * b == math.prod(shape)


def test_oversized_subset_is_clamped_with_a_warning():
    param = torch.zeros(6, requires_grad=True)
    with pytest.warns(UserWarning, match="clamped to 6"):
        memopt.AdamWSN([param], subset_size=10)
