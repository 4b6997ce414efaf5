"""Each manifold's identities, closed-form distances, float32 safety near the ball's boundary, and
ManifoldParameter's survival through deepcopy, pickling and state_dict."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from memopt.manifolds import Euclidean, Lorentz, ManifoldParameter, PoincareBall, Product, Sphere, Stiefel
from memopt.manifolds.poincare import dist_arcosh, dist_mobius, expmap0, lambda_x, logmap0

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


#: (id, manifold, shape of a batch of points)
CASES = [
    ("euclidean", Euclidean(), (4, 3)),
    ("sphere", Sphere(), (5, 4)),
    ("sphere_exact", Sphere(exact=True), (5, 4)),
    ("stiefel_canonical", Stiefel(), (2, 6, 3)),
    ("stiefel_euclidean", Stiefel(canonical=False), (2, 6, 3)),
    ("ball", PoincareBall(), (5, 3)),
    ("ball_c2_exact", PoincareBall(c=2.0, exact=True), (5, 3)),
    ("lorentz", Lorentz(), (5, 4)),
    ("lorentz_k3", Lorentz(k=3.0), (5, 4)),
    ("product", Product((PoincareBall(), (2,)), (Sphere(), (3,)), (Stiefel(), (3, 2)), (Euclidean(), (2,))), (4, 13)),
]
IDS = [c[0] for c in CASES]


def point_and_tangent(manifold, shape, seed=0, scale=0.3):
    g = gen(seed)
    x = manifold.random(*shape, dtype=F64, generator=g)
    if isinstance(manifold, PoincareBall):  # spread the points over the ball, some near the boundary
        x = manifold.projx(expmap0(torch.randn(shape, dtype=F64, generator=g), manifold.c))
    u = manifold.proju(x, scale * torch.randn(shape, dtype=F64, generator=g))
    v = manifold.proju(x, scale * torch.randn(shape, dtype=F64, generator=g))
    return x, u, v


@pytest.mark.parametrize(("case", "manifold", "shape"), CASES, ids=IDS)
def test_random_points_are_on_the_manifold_and_projections_are_idempotent(case, manifold, shape):
    x, _, _ = point_and_tangent(manifold, shape)
    assert manifold.check_point(x) is None
    ambient = 2 * torch.randn(shape, dtype=F64, generator=gen(1))
    projected = manifold.projx(ambient)
    assert manifold.check_point(projected) is None
    torch.testing.assert_close(manifold.projx(projected), projected, rtol=0, atol=1e-12)
    torch.testing.assert_close(manifold.projx(x), x, rtol=0, atol=1e-12)
    tangent = manifold.proju(x, ambient)
    torch.testing.assert_close(manifold.proju(x, tangent), tangent, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("case", "manifold", "shape"), CASES, ids=IDS)
def test_retraction_and_exponential_map_of_zero_are_the_point(case, manifold, shape):
    x, _, _ = point_and_tangent(manifold, shape)
    zero = torch.zeros_like(x)
    torch.testing.assert_close(manifold.retr(x, zero), x, rtol=0, atol=1e-14)
    torch.testing.assert_close(manifold.expmap(x, zero), x, rtol=0, atol=1e-14)


@pytest.mark.parametrize(("case", "manifold", "shape"), CASES, ids=IDS)
def test_steps_land_on_the_manifold_and_transport_is_tangent(case, manifold, shape):
    x, u, v = point_and_tangent(manifold, shape)
    y, w = manifold.retr_transp(x, u, v)
    assert manifold.check_point(y) is None
    assert manifold.check_point(manifold.expmap(x, u)) is None
    torch.testing.assert_close(manifold.proju(y, w), w, rtol=0, atol=1e-12)


#: manifolds whose transport is exact parallel transport (or an isometric vector transport)
ISOMETRIC = ["euclidean", "sphere_exact", "stiefel_canonical", "ball", "ball_c2_exact", "lorentz", "lorentz_k3"]


@pytest.mark.parametrize(("case", "manifold", "shape"), [c for c in CASES if c[0] in ISOMETRIC], ids=ISOMETRIC)
def test_transport_preserves_the_inner_product(case, manifold, shape):
    x, u, v = point_and_tangent(manifold, shape, scale=0.8)
    step = manifold.proju(x, torch.randn(shape, dtype=F64, generator=gen(7)))
    y, pu = manifold.retr_transp(x, step, u)
    _, pv = manifold.retr_transp(x, step, v)
    torch.testing.assert_close(manifold.inner(y, pu, pv), manifold.inner(x, u, v), rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(manifold.norm(y, pu), manifold.norm(x, u), rtol=1e-7, atol=1e-12)


def test_projection_transport_of_the_sphere_is_not_an_isometry():
    """geoopt's default sphere transport (kept as ``Sphere()``) shrinks vectors; ``exact=True`` does not."""
    x, u, _ = point_and_tangent(Sphere(), (5, 4), scale=1.0)
    _, pu = Sphere().retr_transp(x, u, u)
    assert bool((pu.norm(dim=-1) < u.norm(dim=-1) - 1e-6).any())


@pytest.mark.parametrize("c", [1.0, 0.5, 2.0])
def test_poincare_distances_agree_with_closed_forms(c):
    ball = PoincareBall(c=c, exact=True)
    x, u, _ = point_and_tangent(ball, (50, 3), scale=0.5)
    u = u / lambda_x(x, c)  # Riemannian length about 0.5 whatever the point's distance to the boundary
    y = ball.projx(expmap0(torch.randn(50, 3, dtype=F64, generator=gen(3)), c))
    torch.testing.assert_close(dist_arcosh(x, y, c), dist_mobius(x, y, c), rtol=1e-8, atol=1e-10)
    # the geodesic t -> exp_x(t u) has speed ||u||_x, and log inverts exp
    torch.testing.assert_close(ball.dist(x, ball.expmap(x, u)), ball.norm(x, u), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(ball.norm(x, ball.logmap(x, y)), ball.dist(x, y), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(ball.expmap(x, ball.logmap(x, y)), y, rtol=1e-8, atol=1e-10)
    # from the origin: d(0, y) = 2/sqrt(c) artanh(sqrt(c) ||y||)
    zero = torch.zeros_like(y)
    closed = 2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * y.norm(dim=-1))
    torch.testing.assert_close(ball.dist(zero, y), closed, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(logmap0(expmap0(u, c), c), u, rtol=1e-8, atol=1e-12)


def test_lorentz_distances_agree_with_closed_forms_and_with_the_ball():
    k = 2.0
    lorentz = Lorentz(k=k)
    x, u, _ = point_and_tangent(lorentz, (50, 4), scale=0.7)
    y = lorentz.random(50, 4, dtype=F64, generator=gen(5))
    torch.testing.assert_close(lorentz.dist(x, lorentz.expmap(x, u)), lorentz.norm(x, u), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(lorentz.norm(x, lorentz.logmap(x, y)), lorentz.dist(x, y), rtol=1e-8, atol=1e-10)
    # the isometry to the Poincaré ball of curvature -1/k (radius sqrt(k)): p = sqrt(k) x_{1:} / (x_0 + sqrt(k))
    to_ball = lambda p: math.sqrt(k) * p[..., 1:] / (p[..., :1] + math.sqrt(k))
    ball = PoincareBall(c=1 / k)
    torch.testing.assert_close(ball.dist(to_ball(x), to_ball(y)), lorentz.dist(x, y), rtol=1e-8, atol=1e-10)


def test_sphere_distance_is_the_angle():
    sphere = Sphere(exact=True)
    x, u, _ = point_and_tangent(sphere, (50, 4), scale=0.6)
    torch.testing.assert_close(sphere.dist(x, sphere.expmap(x, u)), u.norm(dim=-1), rtol=1e-8, atol=1e-10)


def test_stiefel_exponential_map_is_a_geodesic_of_the_euclidean_metric():
    stiefel = Stiefel(canonical=False)
    x, u, _ = point_and_tangent(stiefel, (6, 3), scale=0.5)
    # exp_x(u) = exp_{exp_x(u/2)}(transported u/2) is hard to state; check a property instead: the curve
    # t -> exp_x(t u) stays on the manifold and its velocity at 0 is u
    h = 1e-6
    velocity = (stiefel.expmap(x, h * u) - stiefel.expmap(x, -h * u)) / (2 * h)
    torch.testing.assert_close(velocity, u, rtol=1e-6, atol=1e-8)
    assert stiefel.check_point(stiefel.expmap(x, 3 * u)) is None


def test_float32_is_safe_at_and_beyond_the_ball_boundary():
    ball = PoincareBall()
    outside = torch.tensor([[1.5, 0.0], [0.0, -1.0], [0.7071, 0.7071], [1e-30, 0.0]], dtype=torch.float32)
    x = ball.projx(outside)
    assert ball.check_point(x) is None
    torch.testing.assert_close(x[:3].norm(dim=-1), torch.full((3,), 1 - 4e-3), rtol=0, atol=1e-6)
    d = ball.dist(x[:1], x[1:2])
    assert torch.isfinite(d).all() and 10 < float(d) < 13  # two boundary points, a quarter turn apart
    assert float(ball.dist(torch.zeros(1, 2), x[:1])) == pytest.approx(2 * math.atanh(1 - 4e-3), rel=1e-4)
    grad = torch.ones_like(x)
    for value in (ball.egrad2rgrad(x, grad), ball.expmap(x, 100 * grad), ball.retr(x, 100 * grad)):
        assert torch.isfinite(value).all()
    assert ball.check_point(ball.expmap(x, 100 * grad)) is None
    assert ball.check_point(outside) is not None and "norm" in ball.check_point(outside)
    assert torch.isfinite(ball.transp(x[:2], x[2:], grad[:2])).all()


def test_product_has_one_component_per_factor():
    ball, sphere = PoincareBall(), Sphere()
    product = Product((ball, (2,)), (sphere, (3,)))
    x, u, v = point_and_tangent(product, (4, 5))
    comps = product.component_inner(x, u)
    assert comps.shape == (4, 2)
    torch.testing.assert_close(comps[:, 0], ball.inner(x[:, :2], u[:, :2]))
    torch.testing.assert_close(comps[:, 1], sphere.inner(x[:, 2:], u[:, 2:]))
    assert product.expand_components(comps, x).shape == (4, 5)
    y, w = product.retr_transp(x, u, v)
    torch.testing.assert_close(y[:, :2], ball.retr(x[:, :2], u[:, :2]))
    torch.testing.assert_close(w[:, 2:], sphere.transp(x[:, 2:], y[:, 2:], v[:, 2:]))
    with pytest.raises(ValueError, match="last dimension must be 5"):
        ManifoldParameter(torch.zeros(4, 6), product)


def test_manifold_parameter_survives_deepcopy_pickle_and_state_dict():
    model = nn.Module()
    model.emb = ManifoldParameter(PoincareBall(c=0.5).random(6, 2), PoincareBall(c=0.5))
    twin = copy.deepcopy(model)
    assert isinstance(twin.emb, ManifoldParameter) and isinstance(twin.emb, nn.Parameter)
    assert twin.emb.manifold.c == 0.5 and torch.equal(twin.emb, model.emb) and twin.emb is not model.emb
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert isinstance(loaded.emb, ManifoldParameter) and torch.equal(loaded.emb, model.emb)
    assert loaded.emb.requires_grad
    with torch.no_grad():
        twin.emb.zero_()
    twin.load_state_dict(model.state_dict())
    assert isinstance(twin.emb, ManifoldParameter) and torch.equal(twin.emb, model.emb)
    assert list(dict(model.named_parameters())) == ["emb"]


def test_bad_shapes_and_arguments_get_clear_errors():
    with pytest.raises(ValueError, match=r"n >= p.*Store the transpose"):
        ManifoldParameter(torch.zeros(3, 5), Stiefel())
    with pytest.raises(ValueError, match="at least 2 coordinates"):
        ManifoldParameter(torch.zeros(4, 1), Sphere())
    with pytest.raises(ValueError, match="c > 0"):
        PoincareBall(c=-1.0)
    with pytest.raises(ValueError, match="k > 0"):
        Lorentz(k=0.0)
    with pytest.raises(TypeError, match="Manifold"):
        ManifoldParameter(torch.zeros(3), "ball")
    x = ManifoldParameter(torch.randn(4, 3), Sphere(), project=True)
    assert Sphere().check_point(x.detach()) is None
