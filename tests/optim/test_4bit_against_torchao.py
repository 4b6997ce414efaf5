"""memopt's 4-bit AdamW (``state_storage="4bit"``) against torchao's ``AdamW4bit`` on CPU, same problem and seed.

What is the same, and tested equal: the signed (first-moment) map, torchao's ``create_dynamic_map(True, 3, 4)``
(to one float32 ulp: memopt computes the midpoints in float64, torchao in float32), blocks of 128 elements
read flat, one float32 absmax per block, nearest-code rounding: the codes and maxima of a first moment are
identical. The nibble order differs (memopt: element ``2k`` in the low nibble; torchao: the high one), which
changes no value.

What differs, line by line:

* the second moment's map: torchao uses the paper's linear zero-free map ``(k + 1) / 16``, memopt the
  paper's "DE-0" (the unsigned dynamic-exponent map without zero, 0.00325 to 1), chosen because block-wise
  (not rank-1) maxima with the linear map round every value under ``absmax / 32`` up to ``absmax / 16``
  (docs/architecture.md, "The state formats"). From step 2, when the quantized second moment is first read,
  the trajectories part by about 13% of the parameters' movement;
* the arithmetic: torchao keeps ``step`` as a float32 tensor (bias corrections ``1 - beta^t`` in float32),
  updates ``v`` by ``lerp(g^2, 1 - beta2)`` and decays by ``p - lr wd p``; memopt follows
  ``torch.optim.AdamW`` (float64 corrections, ``v * beta2 + (1 - beta2) g^2``, ``p * (1 - lr wd)``): about
  1e-5 of a step. Given memopt's DE-0 map (patched into torchao), the two agree to that for the first steps;
  later a code that lands on the other side of a rounding boundary amplifies it.

torchao compiles its update per parameter shape (about 30 s on this CPU); the test runs the same function
eagerly (``torch.compile`` replaced by the identity inside torchao's optimizer).
"""

from __future__ import annotations

import pytest
import torch
from torchao.optim import AdamW4bit, subclass_4bit
from torchao.optim import adam as torchao_adam

import memopt
from memopt.state.quantization import four_bit_map, quantize_4bit

LR, WD = 1e-2, 0.01


def test_first_moment_codes_and_maxima_equal_torchaos():
    torch.testing.assert_close(four_bit_map(True), torch.tensor(subclass_4bit.get_qmap_signed()), rtol=0, atol=3e-8)
    x = torch.randn(4096 * 4, generator=torch.Generator().manual_seed(0))
    theirs = subclass_4bit.OptimState4bit.zeros(x.shape, signed=True)
    theirs.copy_(x)
    packed, absmax = quantize_4bit(x, signed=True)
    assert torch.equal(absmax, theirs.scale)
    mine_codes = torch.stack([packed & 15, packed >> 4], dim=1).view(-1)  # element 2k: low nibble
    their_codes = torch.stack([theirs.codes >> 4, theirs.codes & 15], dim=1).view(-1)  # element 2k: high nibble
    assert torch.equal(mine_codes, their_codes)


def test_the_second_moment_maps_differ_as_documented():
    linear = torch.tensor(subclass_4bit.get_qmap_unsigned())
    assert torch.equal(linear, torch.arange(1, 17) / 16)
    de0 = four_bit_map(False)
    assert de0.numel() == 15 and de0.min().item() == pytest.approx(0.00325) and de0.max().item() == 1.0


def _run(optimizer_of, steps: int) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    torch.manual_seed(0)  # a 64 x 128 and a 128 x 64 matrix (quantized), small layers (float32)
    net = torch.nn.Sequential(
        torch.nn.Linear(128, 64), torch.nn.Tanh(), torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 4)
    )
    start = [p.detach().clone() for p in net.parameters()]
    optimizer = optimizer_of(net)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 128, generator=generator), torch.randn(256, 4, generator=generator)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in net.parameters()], start, loss.item()


def _memopt(net):
    return memopt.build_optimizer(net, "adamw", lr=LR, weight_decay=WD, state_storage="4bit")


def _torchao(net):
    return AdamW4bit(net.parameters(), lr=torch.tensor(LR), weight_decay=WD)


def _difference(steps: int, monkeypatch, *, de0: bool) -> float:
    """The largest ``||memopt - torchao|| / ||memopt's movement||`` over the parameters after ``steps``."""
    mine, start, _ = _run(_memopt, steps)
    with monkeypatch.context() as patch:
        patch.setattr(torchao_adam.torch, "compile", lambda fn, **_: fn)
        if de0:  # torchao's second moments on memopt's map (its 16th code repeats 1.0, as memopt leaves it unused)
            values = (*four_bit_map(False).tolist(), 1.0)
            patch.setattr(subclass_4bit, "get_qmap_unsigned", lambda: values)
        theirs, _, _ = _run(_torchao, steps)
    return max(((a - b).norm() / (a - s).norm()).item() for a, b, s in zip(mine, theirs, start))


def test_given_memopts_second_moment_map_torchao_takes_the_same_steps(monkeypatch):
    assert _difference(3, monkeypatch, de0=True) < 5e-5  # measured 7.6e-6


def test_with_its_own_linear_map_torchao_parts_once_the_second_moment_is_read(monkeypatch):
    assert _difference(1, monkeypatch, de0=False) < 5e-5  # step 1 uses the fresh, unquantized moments
    assert _difference(2, monkeypatch, de0=False) > 0.05  # measured 0.13


def test_both_train_and_memopt_is_not_worse(monkeypatch):
    _, _, mine = _run(_memopt, 30)
    monkeypatch.setattr(torchao_adam.torch, "compile", lambda fn, **_: fn)
    _, _, theirs = _run(_torchao, 30)
    _, _, float32 = _run(lambda net: memopt.build_optimizer(net, "adamw", lr=LR, weight_decay=WD), 30)
    assert mine <= 1.02 * theirs  # measured 0.01025 against 0.01079 (float32 states: 0.01349)
    assert max(mine, theirs) < 0.02 and float32 < 0.02
