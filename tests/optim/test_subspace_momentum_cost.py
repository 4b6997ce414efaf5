"""Subspace-Momentum's regular step as computed (shared ``P(g)`` buffer, back-projection written into the
numerator): bit-identical to the textbook form ``g + P*(M_t - P(g))``; the bfloat16 projection option within
its stated tolerance of float32."""

from __future__ import annotations

import pytest
import torch

import memopt
from memopt.estimators import projectors
from memopt.estimators.base import ParamStep
from memopt.estimators.registry import MOMENTUM

#: several matrices of one shape (they share the fast path's ``P(g)`` buffer), both layouts, a square one
SHAPES = [(48, 32), (48, 32), (48, 32), (32, 80), (32, 80), (40, 40)]
RANK = 8
#: the bound on ||N_bf16 - N|| / ||P*(M_t - P(g))|| and on the projections' relative error: bfloat16 keeps 8
#: significant bits (rounding error 2^-9 = 0.2% per operand), the products are accumulated in float32
BF16_RTOL = 1e-2


def _optimizer_after_one_step(proj_type: str, dtype: torch.dtype, **options) -> torch.optim.Optimizer:
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=generator, dtype=dtype).requires_grad_() for s in SHAPES]
    optimizer = memopt.AdamWSNSM(params, lr=1e-2, rank=RANK, proj_type=proj_type, **options)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator, dtype=dtype)
    optimizer.step()  # builds the projectors and a non-zero momentum
    return optimizer


def _param_steps(optimizer: torch.optim.Optimizer, seed: int = 1) -> list[ParamStep]:
    """The second step's inputs for every parameter, on copies of the state."""
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for index, p in enumerate(optimizer.param_groups[0]["params"]):
        state = {k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()}
        grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        steps.append(ParamStep(p.detach(), p.detach(), grad, state, 2, index, f"p{index}", {}))
    return steps


def _textbook(ps: ParamStep, beta1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``M_t = lerp(M, P(g), 1 - beta1)`` and ``N_t = g + P*(M_t - P(g))``, with temporaries as written."""
    projected = projectors.down(ps.grad, ps.state)
    momentum = ps.state["sm_exp_avg"].clone().lerp_(projected, 1 - beta1)
    return momentum, ps.grad + projectors.up(momentum - projected, ps.state, tuple(ps.grad.shape))


@pytest.mark.parametrize("fast", [True, False], ids=["numerator_many", "numerator"])
@pytest.mark.parametrize("proj_type", ["svd", "randomized", "topk", "uniform"])
def test_numerator_is_bit_identical_to_the_textbook_form(proj_type, fast):
    optimizer = _optimizer_after_one_step(proj_type, torch.float32)
    group = optimizer.param_groups[0]
    steps = _param_steps(optimizer)
    expected = [_textbook(ps, group["betas"][0]) for ps in steps]
    estimator = MOMENTUM["subspace"]
    numerators = estimator.numerator_many(steps, group) if fast else [estimator.numerator(ps, group) for ps in steps]
    for ps, numerator, (momentum, textbook) in zip(steps, numerators, expected, strict=True):
        assert torch.equal(ps.state["sm_exp_avg"], momentum), ps.name
        assert torch.equal(numerator, textbook), ps.name
    # no two numerators share memory (the shared buffer holds P(g), never a result)
    assert len({n.data_ptr() for n in numerators}) == len(numerators)


@pytest.mark.parametrize("proj_type", ["svd", "topk"])
@pytest.mark.parametrize("shape", [(12, 5), (5, 12)])
def test_add_up_and_down_into_a_buffer_equal_the_plain_functions(proj_type, shape):
    generator = torch.Generator().manual_seed(3)
    grad = torch.randn(shape, generator=generator)
    state: dict = {}
    projectors.build(grad, proj_type, 3, state, None, torch.float32)
    x = torch.randn(shape, generator=generator)
    buffer = torch.full(projectors.projected_shape(shape, 3, state["sm_layout"]), float("nan"))
    assert projectors.down(x, state, out=buffer) is buffer
    assert torch.equal(buffer, projectors.down(x, state))
    y = torch.randn(buffer.shape, generator=generator)
    assert torch.equal(projectors.add_up(x, y, state), x + projectors.up(y, state, shape))


@pytest.mark.parametrize("proj_type", ["svd", "randomized"])
def test_bfloat16_projections_stay_within_the_stated_tolerance(proj_type):
    optimizer = _optimizer_after_one_step(proj_type, torch.float32)
    group = optimizer.param_groups[0]
    estimator = MOMENTUM["subspace"]
    exact_steps, low_steps = _param_steps(optimizer), _param_steps(optimizer)
    exact = estimator.numerator_many(exact_steps, group)
    low = estimator.numerator_many(low_steps, {**group, "proj_matmul_dtype": "bfloat16"})
    for ps, lps, n, n_low in zip(exact_steps, low_steps, exact, low, strict=True):
        back_projected = n - ps.grad  # P*(M_t - P(g))
        error = torch.linalg.norm(n_low - n) / torch.linalg.norm(back_projected)
        assert 0 < error < BF16_RTOL, (ps.name, error.item())  # rounded (not float32), and within the bound
        m_error = torch.linalg.norm(lps.state["sm_exp_avg"] - ps.state["sm_exp_avg"])
        assert m_error / torch.linalg.norm(ps.state["sm_exp_avg"]) < BF16_RTOL
        assert n_low.dtype == torch.float32


def test_bfloat16_option_keeps_a_training_trajectory_close_and_the_default_exact():
    generator = torch.Generator().manual_seed(5)
    theta0 = torch.randn(64, 48, generator=generator)
    grads = [torch.randn(64, 48, generator=generator) for _ in range(8)]

    def final(**options) -> torch.Tensor:
        param = theta0.clone().requires_grad_()
        optimizer = memopt.AdamWSNSM([param], lr=1e-2, rank=RANK, update_proj_gap=5, **options)
        for g in grads:
            param.grad = g.clone()
            optimizer.step()
        return param.detach()

    default, explicit_none, low = final(), final(proj_matmul_dtype=None), final(proj_matmul_dtype="bfloat16")
    assert torch.equal(default, explicit_none)
    displacement = torch.linalg.norm(default - theta0)
    assert 0 < torch.linalg.norm(low - default) / displacement < BF16_RTOL


def test_invalid_proj_matmul_dtype_names_the_option():
    with pytest.raises(ValueError, match="proj_matmul_dtype: 'float16'"):
        memopt.AdamWSNSM([torch.zeros(4, 4, requires_grad=True)], proj_matmul_dtype="float16")
