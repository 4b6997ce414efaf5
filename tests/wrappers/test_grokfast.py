"""Grokfast: closed forms for constant gradients, the EMA frequency response, placement, state, errors."""

from __future__ import annotations

import cmath
import io
import math

import pytest
import torch

import memopt
from memopt.wrappers.grokfast import Grokfast


def filtered(filter_: Grokfast, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    param.grad = grad.clone()
    filter_.step()
    return param.grad.clone()


def test_ema_of_a_constant_gradient_is_one_plus_lamb_times_it_from_the_first_step():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    f = Grokfast([w], alpha=0.98, lamb=2.0)
    for _ in range(5):
        torch.testing.assert_close(filtered(f, w, g), 3 * g)


def test_moving_average_warms_up_then_amplifies():
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)
    f = Grokfast([w], filter="ma", window=4, lamb=5.0)
    outs = [filtered(f, w, g) for _ in range(6)]
    for out in outs[:3]:
        torch.testing.assert_close(out, g)
    for out in outs[3:]:
        torch.testing.assert_close(out, 6 * g)


def test_moving_average_without_warmup_and_with_sum():
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    f = Grokfast([w], filter="ma", window=3, lamb=1.0, warmup=False, reduction="sum")
    values = [1.0, 2.0, 4.0, 8.0]
    outs = [float(filtered(f, w, torch.tensor([v], dtype=torch.float64))) for v in values]
    # g + sum of the last 3 gradients (the current one included)
    assert outs == [1 + 1, 2 + 3, 4 + 7, 8 + 14]


@pytest.mark.parametrize("omega", [math.pi / 100, math.pi / 10, math.pi])
def test_ema_frequency_response(omega):
    """|H(w)| = |1 + lamb (1 - alpha)/(1 - alpha e^{-iw})|: 1.836 at pi/100, 1.036 at pi/10, 1.020 at pi."""
    alpha, lamb = 0.98, 2.0
    expected = abs(1 + lamb * (1 - alpha) / (1 - alpha * cmath.exp(-1j * omega)))
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    f = Grokfast([w], alpha=alpha, lamb=lamb)
    n = 3000
    ins, outs = [], []
    for k in range(n):
        x = math.cos(omega * k)
        ins.append(x)
        outs.append(float(filtered(f, w, torch.tensor([x], dtype=torch.float64))))
    tail = slice(n // 2, n)  # after the transient; amplitude by projection on cos and sin

    def amplitude(seq):
        c = sum(v * math.cos(omega * k) for k, v in enumerate(seq[tail], start=n // 2))
        s = sum(v * math.sin(omega * k) for k, v in enumerate(seq[tail], start=n // 2))
        return math.hypot(c, s)

    assert amplitude(outs) / amplitude(ins) == pytest.approx(expected, rel=2e-3)


def test_attached_filter_runs_once_per_step_before_the_optimizer():
    """Quadratic, deterministic gradients: h_k = alpha h_{k-1} + (1 - alpha) g_k (h_0 = g_0),
    x_{k+1} = x_k - lr (g_k + lamb h_k)."""
    A = torch.diag(torch.tensor([1.0, 0.1, 0.01], dtype=torch.float64))
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([x], lr=0.1)
    handle = memopt.Grokfast([x], alpha=0.9, lamb=3.0).attach(optimizer)
    ref, h = torch.ones(3, dtype=torch.float64), None
    for _ in range(40):
        optimizer.zero_grad()
        (0.5 * x @ A @ x).backward()
        optimizer.step()
        g = A @ ref
        h = g.clone() if h is None else 0.9 * h + 0.1 * g
        ref = ref - 0.1 * (g + 3.0 * h)
    torch.testing.assert_close(x.detach(), ref, rtol=1e-12, atol=1e-14)
    handle.remove()
    x.grad = torch.ones(3, dtype=torch.float64)
    before = x.detach().clone()
    optimizer.step()  # no filter any more
    torch.testing.assert_close(x.detach(), before - 0.1)


def test_parameters_without_gradient_are_skipped_and_a_module_is_accepted():
    model = torch.nn.Linear(3, 2)
    f = Grokfast(model)
    model.weight.grad = torch.ones(2, 3)
    f.step()
    assert list(f.state) == [0] and model.bias.grad is None


@pytest.mark.parametrize("kind", ["ema", "ma"])
def test_state_dict_round_trip_continues_identically(kind):
    grads = [torch.randn(4, generator=torch.Generator().manual_seed(i)) for i in range(10)]
    w = torch.zeros(4, requires_grad=True)
    straight = Grokfast([w], filter=kind, window=3)
    expected = [filtered(straight, w, g) for g in grads]
    first = Grokfast([w], filter=kind, window=3)
    for g in grads[:4]:
        filtered(first, w, g)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = Grokfast([w], filter=kind, window=3)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    for g, e in zip(grads[4:], expected[4:]):
        assert torch.equal(filtered(second, w, g), e)
    with pytest.raises(ValueError, match="settings"):
        Grokfast([w], filter=kind, window=5).load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match="saved for another model"):
        Grokfast([torch.zeros(5, requires_grad=True)], filter=kind, window=3).load_state_dict(first.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filter": "fft"}, r"Invalid filter: 'fft'"),
        ({"alpha": 1.0}, r"Invalid alpha: 1\.0\. alpha must lie in \[0, 1\)"),
        ({"lamb": -1.0}, r"Invalid lamb: -1\.0"),
        ({"filter": "ma", "window": 0}, r"Invalid window: 0"),
        ({"reduction": "max"}, r"Invalid reduction: 'max'"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Grokfast([torch.zeros(2, requires_grad=True)], **kwargs)
