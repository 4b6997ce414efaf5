"""The Riemannian optimizers: equal to torch.optim on Euclidean parameters, to geoopt's RiemannianAdam on the
Poincaré ball and the sphere, adaptive per product factor, points kept on the manifold for 1000 steps,
clear errors, and a bit-exact state_dict round trip."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import memopt
from memopt.manifolds import Euclidean, Lorentz, ManifoldParameter, PoincareBall, Product, Sphere, Stiefel
from memopt.riemannian import RiemannianAdagrad, RiemannianAdam, RiemannianAMSGrad, RiemannianSGD

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quadratic_grads(params, targets):
    """Gradients of sum ||p - t||^2 * (1 + ||p||^2) (non-trivial, bounded near the targets)."""
    for p, t in zip(params, targets):
        p.grad = None
        with torch.enable_grad():
            loss = ((p - t) ** 2).sum() * (1 + (p**2).sum())
            loss.backward()


# ----------------------------------------------------------------------------- Euclidean = torch.optim
TORCH_PAIRS = [
    ("adam", lambda p: RiemannianAdam(p, lr=0.01, weight_decay=0.1),
     lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    ("amsgrad", lambda p: RiemannianAMSGrad(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True)),
    ("sgd_momentum", lambda p: RiemannianSGD(p, lr=0.01, momentum=0.9, dampening=0.1),
     lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, dampening=0.1)),
    ("sgd_nesterov", lambda p: RiemannianSGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01),
     lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adagrad", lambda p: RiemannianAdagrad(p, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
     lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
]  # fmt: skip


@pytest.mark.parametrize(("case", "ours", "theirs"), TORCH_PAIRS, ids=[c[0] for c in TORCH_PAIRS])
@pytest.mark.parametrize("wrap", ["plain", "euclidean_manifold"])
def test_on_the_euclidean_manifold_it_is_torch_optim(case, ours, theirs, wrap):
    init = [torch.randn(5, 3, dtype=F64, generator=gen(1)), torch.randn(4, dtype=F64, generator=gen(2))]
    targets = [torch.randn_like(t) for t in init]
    if wrap == "plain":
        a = [nn.Parameter(t.clone()) for t in init]
    else:
        a = [ManifoldParameter(t.clone(), Euclidean()) for t in init]
    b = [nn.Parameter(t.clone()) for t in init]
    opt_a, opt_b = ours(a), theirs(b)
    for _ in range(100):
        quadratic_grads(a, targets)
        quadratic_grads(b, targets)
        opt_a.step()
        opt_b.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------- against geoopt
def _geoopt_cases():
    geoopt = pytest.importorskip("geoopt")
    return geoopt, [
        ("ball", PoincareBall(), geoopt.PoincareBall()),
        ("ball_exact", PoincareBall(exact=True), geoopt.PoincareBallExact()),
        ("ball_c", PoincareBall(c=0.7), geoopt.PoincareBall(c=0.7)),
        ("sphere", Sphere(), geoopt.Sphere()),
    ]


@pytest.mark.parametrize("index", range(4), ids=["ball", "ball_exact", "ball_c", "sphere"])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_equals_geoopt_riemannian_adam(index, amsgrad, dtype):
    geoopt, cases = _geoopt_cases()
    _, ours_m, geo_m = cases[index]
    if isinstance(ours_m, PoincareBall):  # geoopt keeps the curvature as a float32 parameter
        geo_m = geo_m.to(dtype)
        ours_m = PoincareBall(c=float(geo_m.c), exact=ours_m.exact)
    x0 = ours_m.projx(0.4 * torch.randn(20, 4, dtype=dtype, generator=gen(3)))
    target = 0.5 * torch.randn(20, 4, dtype=dtype, generator=gen(4))
    a = ManifoldParameter(x0.clone(), ours_m)
    b = geoopt.ManifoldParameter(x0.clone(), manifold=geo_m)
    opt_a = RiemannianAdam([a], lr=0.02, amsgrad=amsgrad, weight_decay=0.01)
    opt_b = geoopt.optim.RiemannianAdam([b], lr=0.02, amsgrad=amsgrad, weight_decay=0.01)
    worst = 0.0
    for _ in range(100):
        quadratic_grads([a], [target])
        quadratic_grads([b], [target])
        opt_a.step()
        opt_b.step()
        worst = max(worst, float((a.detach() - b.detach()).abs().max()))
    assert worst <= 1e-6
    # the second moment is one scalar per point here, broadcast to the parameter's shape in geoopt
    assert opt_a.state[a]["exp_avg_sq"].shape == (20, 1)
    torch.testing.assert_close(opt_a.state[a]["exp_avg"], opt_b.state[b]["exp_avg"], rtol=0, atol=1e-6)


def test_plain_riemannian_sgd_on_the_ball_is_the_nickel_kiela_update():
    ball = PoincareBall()
    x0 = ball.random(10, 3, dtype=F64, generator=gen(0)) * 300  # spread inside the ball
    grad = torch.randn(10, 3, dtype=F64, generator=gen(1))
    p = ManifoldParameter(ball.projx(x0), ball)
    expected = ball.projx(p.detach() - 0.1 * (1 - (p.detach() ** 2).sum(-1, keepdim=True)) ** 2 / 4 * grad)
    p.grad = grad.clone()
    RiemannianSGD([p], lr=0.1).step()
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------ product adaptivity
def test_a_product_parameter_steps_like_its_factors_as_separate_parameters():
    ball, sphere = PoincareBall(), Sphere()
    product = Product((ball, (2,)), (sphere, (3,)))
    x0 = product.random(6, 5, dtype=F64, generator=gen(5))
    target = torch.randn(6, 5, dtype=F64, generator=gen(6))
    joint = ManifoldParameter(x0.clone(), product)
    parts = [ManifoldParameter(x0[:, :2].clone(), ball), ManifoldParameter(x0[:, 2:].clone(), sphere)]
    opt_joint = RiemannianAdam([joint], lr=0.05)
    opt_parts = RiemannianAdam(parts, lr=0.05)
    for _ in range(30):
        quadratic_grads([joint], [target])
        quadratic_grads(parts, [target[:, :2], target[:, 2:]])
        # the quadratic's (1 + ||p||^2) factor couples the factors; use the joint gradient for both
        parts[0].grad, parts[1].grad = joint.grad[:, :2].clone(), joint.grad[:, 2:].clone()
        opt_joint.step()
        opt_parts.step()
    torch.testing.assert_close(joint.detach(), torch.cat([p.detach() for p in parts], -1), rtol=0, atol=1e-12)
    assert opt_joint.state[joint]["exp_avg_sq"].shape == (6, 2)  # one second moment per factor and row


# ------------------------------------------------------------------------- 1000 steps on the manifold
MANIFOLDS = [
    ("sphere", Sphere(), (8, 5)),
    ("sphere_exact", Sphere(exact=True), (8, 5)),
    ("stiefel", Stiefel(), (6, 3)),
    ("stiefel_qr", Stiefel(canonical=False), (6, 3)),
    ("ball", PoincareBall(), (8, 3)),
    ("ball_exact", PoincareBall(exact=True), (8, 3)),
    ("lorentz", Lorentz(), (8, 3)),
    ("product", Product((PoincareBall(), (2,)), (Sphere(), (3,))), (8, 5)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("case", "manifold", "shape"), MANIFOLDS, ids=[m[0] for m in MANIFOLDS])
def test_points_stay_on_the_manifold_for_1000_steps(case, manifold, shape, dtype):
    """A linear objective pushes ball points against the boundary; a Minkowski one pulls Lorentz points."""
    p = ManifoldParameter(manifold.random(*shape, dtype=dtype, generator=gen(0)), manifold)
    direction = torch.randn(shape, dtype=dtype, generator=gen(1))
    if isinstance(manifold, Lorentz):
        target = manifold.random(*shape, dtype=dtype, generator=gen(1))
        direction = torch.cat([target[..., :1], -target[..., 1:]], -1)  # grad of -<x, t>_L = k cosh(d(x, t)/sqrt(k))
    optimizer = RiemannianAdam([p], lr=0.05, betas=(0.9, 0.99))
    for _ in range(1000):
        p.grad = direction.clone()
        optimizer.step()
    assert manifold.check_point(p.detach()) is None, manifold.check_point(p.detach())
    assert torch.isfinite(optimizer.state[p]["exp_avg"]).all()


def test_stabilize_reprojects_every_n_steps():
    stiefel = Stiefel()
    p = ManifoldParameter(stiefel.random(40, 20, generator=gen(0)), stiefel)
    optimizer = RiemannianSGD([p], lr=0.5, momentum=0.9, stabilize=7)
    for _ in range(7):
        p.grad = torch.randn(40, 20, generator=gen(1))
        optimizer.step()
    after_stabilize = (p.detach().T @ p.detach() - torch.eye(20)).abs().max()
    assert after_stabilize < 2e-6
    buffer = optimizer.state[p]["momentum_buffer"]
    torch.testing.assert_close(stiefel.proju(p.detach(), buffer), buffer, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="stabilize"):
        RiemannianAdam([p], stabilize=0)


# ------------------------------------------------------------------------------------------ errors
class Embedding(nn.Module):
    def __init__(self, data: torch.Tensor, manifold) -> None:
        super().__init__()
        self.points = ManifoldParameter(data, manifold)
        self.scale = nn.Parameter(torch.ones(1))


def test_a_point_off_the_manifold_is_a_clear_error_naming_the_parameter():
    model = Embedding(torch.tensor([[0.5, 0.2], [1.2, 0.0]]), PoincareBall())
    optimizer = memopt.build_optimizer(model, "riemannian_adam", lr=0.1)
    model.points.grad = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"parameter 'points' is not on its manifold PoincareBall.*projx"):
        optimizer.step()
    assert optimizer.state[model.points] == {}  # nothing was changed
    with torch.no_grad():
        model.points.copy_(model.points.manifold.projx(model.points))
    optimizer.step()
    assert PoincareBall().check_point(model.points.detach()) is None


def test_wrong_shapes_and_hyperparameters_are_clear_errors():
    with pytest.raises(ValueError, match="n >= p"):
        ManifoldParameter(torch.zeros(2, 4), Stiefel())
    p = ManifoldParameter(Sphere().random(3, 4), Sphere())
    with pytest.raises(ValueError, match="betas"):
        RiemannianAdam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="nesterov"):
        RiemannianSGD([p], nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        RiemannianAdagrad([p], lr=-1.0)


# -------------------------------------------------------------------------------- registry and state
@pytest.mark.parametrize("name", ["riemannian_sgd", "riemannian_adam", "riemannian_amsgrad", "riemannian_adagrad"])
def test_build_optimizer_and_bit_exact_resume(name):
    def make():
        torch.manual_seed(0)
        model = nn.Module()
        model.ball = ManifoldParameter(PoincareBall().random(12, 3), PoincareBall())
        model.frame = ManifoldParameter(Stiefel().random(5, 2), Stiefel())
        model.lorentz = ManifoldParameter(Lorentz().random(4, 3), Lorentz())
        model.bias = nn.Parameter(torch.zeros(3))
        hparams = {"lr": 0.05, "momentum": 0.9} if name == "riemannian_sgd" else {"lr": 0.05}
        return model, memopt.build_optimizer(model, name, **hparams)

    def loss(model, t):
        g = torch.Generator().manual_seed(100 + t)
        w = torch.randn(12, 3, generator=g)
        return (
            (model.ball * w).sum() + (model.frame * torch.randn(5, 2, generator=g)).sum()
            + (model.lorentz[:, 1:] ** 2).sum() * 0.1 + ((model.bias - 1) ** 2).sum()
        )  # fmt: skip

    def run(model, optimizer, steps):
        for t in steps:
            optimizer.zero_grad()
            loss(model, t).backward()
            optimizer.step()

    model, optimizer = make()
    run(model, optimizer, range(10))
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    model, optimizer = make()
    run(model, optimizer, range(5))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model, optimizer = make()
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    assert optimizer.state[model.ball]["step"] == 5
    run(model, optimizer, range(5, 10))
    for key, value in model.state_dict().items():
        assert torch.equal(value, straight[key]), key


def test_a_checkpoint_from_another_manifold_is_rejected():
    ball = ManifoldParameter(PoincareBall().random(6, 3), PoincareBall())
    optimizer = RiemannianAdam([ball], lr=0.1)
    ball.grad = torch.ones(6, 3)
    optimizer.step()
    plain = nn.Parameter(ball.detach().clone())
    other = RiemannianAdam([plain], lr=0.1)  # Euclidean: one second moment per coordinate
    with pytest.raises(ValueError, match=r"exp_avg_sq.*shape \(6, 1\), expected \(6, 3\)"):
        other.load_state_dict(optimizer.state_dict())
