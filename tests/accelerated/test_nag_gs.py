"""NAG-GS: heavy-ball equivalence, contraction and stability on quadratics, golden values, exact resume."""

from __future__ import annotations

import math

import pytest
import torch
from tests.helpers import make_grads, make_params, run, save_and_reload

import memopt
from memopt.accelerated.nag_gs import NAGGS, heavy_ball_coefficients, optimal_step, stability_limit
from memopt.harness.problems.quadratic import Quadratic

MU, L = 1e-3, 1.0


@pytest.fixture(scope="module")
def quadratic() -> Quadratic:
    return Quadratic.with_spectrum(torch.linspace(MU, L, 20, dtype=torch.float64), seed=0)


def iterate(problem: Quadratic, optimizer_factory, steps: int) -> torch.Tensor:
    x = torch.zeros(problem.dim, dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_factory([x])
    out = []
    for _ in range(steps):
        x.grad = problem.grad(x.detach())
        optimizer.step()
        out.append(x.detach().clone())
    return torch.stack(out)


def test_gamma_equal_to_mu_is_heavy_ball_with_the_derived_coefficients():
    shapes = [(6, 4), (5,)]
    params, grads = make_params(shapes), make_grads(shapes, 300)
    alpha, mu = 0.3, 0.7
    lr, momentum = heavy_ball_coefficients(alpha, mu)
    assert lr == pytest.approx(alpha**2 / (mu * (1 + alpha) ** 2), rel=1e-15)
    assert momentum == pytest.approx((1 + alpha) ** -2, rel=1e-15)
    ours, _ = run(lambda ps: NAGGS(ps, lr=alpha, mu=mu, gamma=mu), params, grads)
    theirs, _ = run(lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum), params, grads)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_updated_gamma_matches_the_one_buffer_heavy_ball_form_with_varying_coefficients(quadratic):
    """x_{k+1} = x_k + (1-a)(1-b_k)(x_k - x_{k-1}) - (a b_k / mu) g_k, b_k = alpha mu/(alpha mu + gamma_k),
    gamma_{k+1} = (gamma_k + alpha mu)/(1 + alpha): v eliminated, so the algebra is independent."""
    alpha, gamma0 = 0.04, 1.5
    ours = iterate(quadratic, lambda p: NAGGS(p, lr=alpha, mu=MU, gamma=gamma0), 200)
    a = alpha / (1 + alpha)
    x_prev = x = torch.zeros(quadratic.dim, dtype=torch.float64)
    gamma, expected = gamma0, []
    for _ in range(200):
        b = alpha * MU / (alpha * MU + gamma)
        x, x_prev = x + (1 - a) * (1 - b) * (x - x_prev) - (a * b / MU) * quadratic.grad(x), x
        gamma = (gamma + alpha * MU) / (1 + alpha)
        expected.append(x)
    torch.testing.assert_close(ours, torch.stack(expected), rtol=1e-10, atol=1e-12)


def test_gamma_relaxes_to_mu_geometrically():
    x = torch.zeros(3, requires_grad=True, dtype=torch.float64)
    optimizer = NAGGS([x], lr=0.2, mu=0.5, gamma=2.0)
    for k in range(1, 30):
        x.grad = torch.ones_like(x)
        optimizer.step()
        assert optimizer.state[x]["gamma"] == pytest.approx(0.5 + 1.5 * 1.2**-k, rel=1e-12)


@pytest.mark.parametrize(
    ("fixed_gamma", "expected"),
    [(False, -6.8442e-05), (True, 2.9082e-04)],
    ids=["nag_gs_torch_order", "nag4"],
)
def test_golden_values(fixed_gamma, expected):
    """f(x) = x^T x, x0 = ones(3), 200 steps, alpha 0.05, mu 1, gamma 1.5 (values of the spec / README)."""
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    optimizer = NAGGS([x], lr=0.05, mu=1.0, gamma=1.5, fixed_gamma=fixed_gamma)
    for _ in range(200):
        x.grad = 2 * x.detach()
        optimizer.step()
    torch.testing.assert_close(x.detach(), torch.full((3,), expected, dtype=torch.float64), rtol=1e-4, atol=0)


def test_fixed_gamma_is_the_nag4_update():
    alpha, mu, gamma = 0.1, 0.3, 2.0
    params, grads = make_params([(7,)]), make_grads([(7,)], 20)
    ours, _ = run(lambda ps: NAGGS(ps, lr=alpha, mu=mu, gamma=gamma, fixed_gamma=True), params, grads)
    x = params[0].detach().clone()
    v = x.clone()
    for (g,) in grads:
        v = (v + (alpha / gamma) * (mu * x - g)) / (1 + alpha * mu / gamma)
        x = (x + alpha * v) / (1 + alpha)
    torch.testing.assert_close(ours[0], x, rtol=1e-12, atol=1e-14)


def _heavy_ball_radius(step: float, momentum: float, eigenvalues: torch.Tensor) -> float:
    """Spectral radius of [[1 + m - s lambda, -m], [1, 0]] over the eigenvalues (plain eigvals)."""
    radius = 0.0
    for lam in eigenvalues.tolist():
        matrix = torch.tensor([[1 + momentum - step * lam, -momentum], [1.0, 0.0]], dtype=torch.float64)
        radius = max(radius, float(torch.linalg.eigvals(matrix).abs().max()))
    return radius


def test_optimal_step_gives_the_optimal_heavy_ball_rate_and_stability_limit_is_where_it_crosses_one():
    eigenvalues = torch.linspace(MU, L, 400, dtype=torch.float64)
    alpha_c, limit = optimal_step(MU, L), stability_limit(MU, L)
    kappa = L / MU
    assert alpha_c == pytest.approx(2 * math.sqrt(MU) / (math.sqrt(L) - math.sqrt(MU)), rel=1e-12)
    assert _heavy_ball_radius(*heavy_ball_coefficients(alpha_c, MU), eigenvalues) == pytest.approx(
        (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1), rel=1e-5
    )
    assert _heavy_ball_radius(*heavy_ball_coefficients(0.999 * limit, MU), eigenvalues) < 1
    assert _heavy_ball_radius(*heavy_ball_coefficients(1.001 * limit, MU), eigenvalues) > 1


def test_contraction_at_nine_tenths_of_the_optimal_step_is_one_over_one_plus_alpha(quadratic):
    alpha = 0.9 * optimal_step(MU, L)
    errors = (iterate(quadratic, lambda p: NAGGS(p, lr=alpha, mu=MU, gamma=MU), 600) - quadratic.minimizer).norm(dim=1)
    measured = float((errors[-1] / errors[299]) ** (1 / 300))
    assert measured == pytest.approx(1 / (1 + alpha), rel=0.01)


def test_above_the_stability_limit_it_diverges(quadratic):
    alpha = 1.05 * stability_limit(MU, L)
    errors = (iterate(quadratic, lambda p: NAGGS(p, lr=alpha, mu=MU, gamma=MU), 400) - quadratic.minimizer).norm(dim=1)
    assert errors[-1] > 1e6 * errors[0]


def test_save_load_continue_is_bit_identical():
    shapes = [(5, 3), (4,)]
    params, grads = make_params(shapes, torch.float32), make_grads(shapes, 12, torch.float32)
    make = lambda ps: NAGGS(ps, lr=0.1, mu=0.5, gamma=1.5)
    straight, _ = run(make, params, grads)
    halfway, optimizer = run(make, params, grads[:5])
    new_params, new_optimizer = save_and_reload(optimizer, make, halfway)
    resumed, _ = run(make, new_params, grads[5:], optimizer=new_optimizer)
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)


def test_bfloat16_parameters_track_float64():
    shapes = [(8, 4)]
    grads64 = make_grads(shapes, 30)
    params64 = make_params(shapes)
    params16 = [p.detach().to(torch.bfloat16).requires_grad_() for p in params64]
    high, _ = run(lambda ps: NAGGS(ps, lr=0.05, mu=1.0, gamma=1.0), params64, grads64)
    low, optimizer = run(
        lambda ps: NAGGS(ps, lr=0.05, mu=1.0, gamma=1.0), params16, [[g.bfloat16() for g in s] for s in grads64]
    )
    assert optimizer.state[optimizer.param_groups[0]["params"][0]]["v"].dtype == torch.float32
    torch.testing.assert_close(low[0].double(), high[0], rtol=0.02, atol=0.02)


def test_maximize_and_schedulers():
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = memopt.NAGGS([x], lr=0.1, maximize=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    x.grad = torch.ones(2, dtype=torch.float64)
    optimizer.step()
    scheduler.step()
    assert (x.detach() > 0).all() and optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
