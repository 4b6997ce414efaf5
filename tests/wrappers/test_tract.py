"""memopt.tract: equal to the authors' torch-tract (both forms, Linear and Conv2d), closed forms (large lambda,
whitened inputs), convolutions torch-tract does not cover against a literal unfold reference, torch.compile,
errors, and checkpoints."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import memopt
from memopt.wrappers.tract import TrActConv2d, TrActLinear, tract_weight_grad

torch_tract = pytest.importorskip("torch_tract", reason="the reference implementation (dev extra torch-tract)")

DT = torch.float64


def grads(layer: nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(output, weight grad, bias grad, input grad) of a squared loss through ``layer``."""
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    out = layer(x)
    ((out - target) ** 2).sum().backward()
    return out.detach(), layer.weight.grad.clone(), layer.bias.grad.clone(), x.grad.clone()


def assert_all_close(ours, theirs):
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def linear_pair(n: int, m: int, lambda_: float = 0.1):
    torch.manual_seed(0)
    plain = nn.Linear(n, m, dtype=DT)
    reference = torch_tract.TrAct(nn.Linear(n, m, dtype=DT), l=lambda_)
    reference.weight, reference.bias = (
        nn.Parameter(plain.weight.detach().clone()),
        nn.Parameter(plain.bias.detach().clone()),
    )
    return memopt.tract(plain, lambda_), reference


@pytest.mark.parametrize(
    "batch, n, form",
    [((64,), 12, "direct"), ((5,), 12, "woodbury"), ((3, 7), 10, "direct"), ((2, 3), 10, "woodbury")],
    ids=["direct", "woodbury", "tokens-direct", "tokens-woodbury"],
)
def test_linear_equals_torch_tract(batch, n, form):
    ours, theirs = linear_pair(n, 6, lambda_=0.1)
    x = torch.randn(*batch, n, dtype=DT) * 3 + 1  # uncentred, not whitened: the preconditioner matters
    target = torch.randn(*batch, 6, dtype=DT)
    rows = x.reshape(-1, n).shape[0]
    assert (rows < n) == (form == "woodbury")  # torch-tract switches on the same rule
    assert_all_close(grads(ours, x, target), grads(theirs, x, target))
    plain = nn.Linear(n, 6, dtype=DT)
    plain.load_state_dict(ours.state_dict())
    plain_out, plain_w, _, plain_x = grads(plain, x, target)
    ours_out, ours_w, _, ours_x = grads(ours, x, target)
    torch.testing.assert_close(ours_out, plain_out)  # only the weight gradient changes
    torch.testing.assert_close(ours_x, plain_x)
    assert (ours_w - plain_w).abs().max() > 1e-3


@pytest.mark.parametrize(
    "batch, size, stride, padding, form",
    [(4, 8, 1, 1, "direct"), (1, 4, 2, 0, "woodbury"), (2, 8, 2, 1, "direct")],
    ids=["direct", "woodbury", "strided"],
)
def test_conv2d_equals_torch_tract(batch, size, stride, padding, form):
    torch.manual_seed(1)
    plain = nn.Conv2d(3, 5, 3, stride=stride, padding=padding, dtype=DT)
    theirs = torch_tract.TrAct(nn.Conv2d(3, 5, 3, stride=stride, padding=padding, dtype=DT), l=0.1)
    theirs.weight = nn.Parameter(plain.weight.detach().clone())
    theirs.bias = nn.Parameter(plain.bias.detach().clone())
    ours = memopt.tract(plain, 0.1)
    x = torch.rand(batch, 3, size, size, dtype=DT)  # pixel-like: in [0, 1]
    out = plain(x)
    target = torch.randn_like(out)
    rows = batch * out.shape[2] * out.shape[3]
    assert (rows < 3 * 3 * 3) == (form == "woodbury")
    assert_all_close(grads(ours, x, target), grads(theirs, x, target))


def test_direct_and_woodbury_forms_agree_whatever_the_shape():
    torch.manual_seed(2)
    for b, n in [(4, 9), (9, 4), (6, 6)]:
        x, g = torch.randn(b, n, dtype=DT), torch.randn(b, 3, dtype=DT)
        direct = tract_weight_grad(x, g, 0.3, "direct")
        literal = g.T @ x @ torch.linalg.inv(x.T @ x / b + 0.3 * torch.eye(n, dtype=DT))
        torch.testing.assert_close(direct, literal, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(tract_weight_grad(x, g, 0.3, "woodbury"), literal, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {"stride": 2, "padding": 2, "dilation": 2},
        {"padding": "same", "padding_mode": "reflect"},
        {"padding": "same", "dilation": 2},
        {"padding": 1, "padding_mode": "circular", "bias": False},
    ],
    ids=["dilated", "same-reflect", "same-dilated", "circular"],
)
def test_conv2d_options_torch_tract_drops_match_a_literal_unfold_reference(options):
    """The plain autograd weight gradient times (a^T a / b + lambda I)^-1, with a the layer's own patches."""
    torch.manual_seed(3)
    plain = nn.Conv2d(2, 4, 3, dtype=DT, **options)
    ours = memopt.tract(plain, 0.2)
    x = torch.rand(3, 2, 9, 9, dtype=DT)
    out = plain(x)
    target = torch.randn_like(out)
    plain.zero_grad()
    ((plain(x) - target) ** 2).sum().backward()
    plain_grad = plain.weight.grad.clone()
    ours.zero_grad()
    ((ours(x) - target) ** 2).sum().backward()
    torch.testing.assert_close(ours(x), out)
    # the patches the convolution sees: pad as the layer does, then unfold with no padding
    padded = x
    if options.get("padding") == "same":
        dil = options.get("dilation", 1)
        pads = [dil, dil, dil, dil]  # kernel 3: dilation * 2 in total per dim, even split
        padded = F.pad(x, pads, mode=options.get("padding_mode", "constant"))
    elif options.get("padding_mode", "zeros") != "zeros":
        padded = F.pad(x, [options["padding"]] * 4, mode=options["padding_mode"])
    unfold = {
        "stride": options.get("stride", 1),
        "dilation": options.get("dilation", 1),
        "padding": options["padding"] if padded is x else 0,
    }
    a = F.unfold(padded, 3, **unfold).transpose(1, 2).reshape(-1, 18)
    expected = plain_grad.reshape(4, 18) @ torch.linalg.inv(a.T @ a / a.shape[0] + 0.2 * torch.eye(18, dtype=DT))
    torch.testing.assert_close(ours.weight.grad, expected.reshape(plain_grad.shape), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("layer_kind", ["linear", "conv"])
def test_large_lambda_recovers_the_plain_gradient_over_lambda(layer_kind):
    """lambda grad_tract = plain (I + C / lambda)^-1, so its distance to plain is at most |plain| |C| / lambda."""
    torch.manual_seed(4)
    if layer_kind == "linear":
        plain, x = nn.Linear(8, 3, dtype=DT), torch.randn(20, 8, dtype=DT) + 2
        rows = x
    else:
        plain, x = nn.Conv2d(1, 3, 2, dtype=DT), torch.rand(2, 1, 5, 5, dtype=DT)
        rows = F.unfold(x, 2).transpose(1, 2).reshape(-1, 4)
    covariance_norm = torch.linalg.matrix_norm(rows.T @ rows / rows.shape[0], 2)
    _, plain_grad, plain_bias, _ = grads(plain, x, torch.zeros_like(plain(x)))
    for lambda_ in (1e3, 1e6):
        _, grad, bias, _ = grads(memopt.tract(plain, lambda_), x, torch.zeros_like(plain(x)))
        error = torch.linalg.norm(lambda_ * grad - plain_grad) / torch.linalg.norm(plain_grad)
        bound = covariance_norm / lambda_
        assert error <= bound and error > bound / 100
        torch.testing.assert_close(bias, plain_bias)  # the bias gradient is the plain one


def test_whitened_inputs_give_the_plain_gradient_over_one_plus_lambda():
    torch.manual_seed(5)
    b, n = 32, 6
    q, _ = torch.linalg.qr(torch.randn(b, n, dtype=DT))
    x = q * b**0.5  # x^T x / b = I
    plain = nn.Linear(n, 4, dtype=DT)
    target = torch.randn(b, 4, dtype=DT)
    _, plain_grad, _, _ = grads(plain, x, target)
    _, grad, _, _ = grads(memopt.tract(plain, 0.1), x, target)
    torch.testing.assert_close(grad, plain_grad / 1.1, rtol=1e-10, atol=1e-12)


def test_the_replacement_shares_the_parameters_and_any_optimizer_steps_on_it():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    optimizer = memopt.build_optimizer(model, "adamw", lr=1e-2)  # built before the swap
    first = model[0]
    model[0] = memopt.tract(model[0])
    assert model[0].weight is first.weight and model[0].bias is first.bias
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[0], TrActConv2d)
    before = first.weight.detach().clone()
    F.cross_entropy(model(torch.rand(5, 1, 6, 6)), torch.tensor([0, 1, 0, 1, 1])).backward()
    optimizer.step()
    assert not torch.equal(first.weight, before)


def test_state_dict_round_trip_between_plain_and_tract_models():
    def net():
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))

    torch.manual_seed(7)
    model = net()
    model[0] = memopt.tract(model[0], 0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 2, (8,))
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert set(saved["model"]) == set(net().state_dict())  # the plain model's keys, nothing added

    plain = net()
    plain.load_state_dict(saved["model"])
    torch.testing.assert_close(plain(x), model(x), rtol=0, atol=0)
    resumed = net()
    resumed[0] = memopt.tract(resumed[0], 0.5)
    resumed.load_state_dict(saved["model"])
    resumed_opt = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    resumed_opt.load_state_dict(saved["optimizer"])
    for m, o in ((model, optimizer), (resumed, resumed_opt)):
        o.zero_grad()
        F.cross_entropy(m(x), y).backward()
        o.step()
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_works_under_torch_compile():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    model[0] = memopt.tract(model[0])
    vit_embed = memopt.tract(nn.Linear(4, 6))
    x, tokens = torch.rand(3, 2, 5, 5), torch.randn(2, 3, 4)
    eager = [(model, x), (vit_embed, tokens)]
    expected = []
    for layer, inp in eager:
        layer.zero_grad()
        layer(inp).square().sum().backward()
        expected.append([p.grad.clone() for p in layer.parameters()])
    for (layer, inp), want in zip(eager, expected):
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
        layer.zero_grad()
        compiled(inp).square().sum().backward()
        for got, ref in zip([p.grad for p in layer.parameters()], want):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_solves_in_float32_and_returns_the_weight_dtype():
    torch.manual_seed(9)
    layer = memopt.tract(nn.Linear(16, 4))
    x = torch.rand(64, 16)
    layer(x).sum().backward()
    reference = layer.weight.grad.clone()
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x).sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    torch.testing.assert_close(layer.weight.grad, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), True, "0.1", None])
def test_bad_lambda_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match=r"Invalid lambda_: .* must be a finite number > 0"):
        memopt.tract(nn.Linear(3, 2), bad)


def test_unsupported_layers_and_options_are_clear_errors():
    with pytest.raises(TypeError, match=r"got a Conv1d; TrAct applies to a model's first nn.Linear or nn.Conv2d"):
        memopt.tract(nn.Conv1d(1, 2, 3))
    with pytest.raises(TypeError, match="got a Embedding"):
        memopt.tract(nn.Embedding(10, 4))
    with pytest.raises(ValueError, match=r"grouped Conv2d \(groups=2\)"):
        memopt.tract(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="is a TrAct layer already"):
        memopt.tract(memopt.tract(nn.Linear(3, 2)))
    with pytest.raises(ValueError, match=r"Invalid form: 'cholesky'"):
        memopt.tract(nn.Linear(3, 2), form="cholesky")
    assert isinstance(memopt.tract(nn.Linear(3, 2)), TrActLinear)
