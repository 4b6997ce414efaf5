"""Small drivers shared by the optimizer tests: run an optimizer on fixed random gradients."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import torch
from torch import nn

OptimizerFactory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


def make_params(
    shapes: Sequence[tuple[int, ...]], dtype: torch.dtype = torch.float64, seed: int = 0
) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=generator, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def make_grads(
    shapes: Sequence[tuple[int, ...]], steps: int, dtype: torch.dtype = torch.float64, seed: int = 1
) -> list[list[torch.Tensor]]:
    """``steps`` lists of gradients, one per shape (drawn in float64, then cast)."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=generator, dtype=torch.float64).to(dtype) for s in shapes] for _ in range(steps)]


def run(
    factory: OptimizerFactory,
    params: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """Apply one step per entry of ``grads`` to copies of ``params``; return the final copies and optimizer."""
    if optimizer is None:
        params = [p.detach().clone().requires_grad_() for p in params]
        optimizer = factory(params)
    else:
        params = [p for group in optimizer.param_groups for p in group["params"]]
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach().clone() for p in params], optimizer


def trajectory(
    factory: OptimizerFactory, theta0: torch.Tensor, grads: list[torch.Tensor]
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """One parameter, a copy of ``theta0``, stepped once per entry of ``grads``: its value after each step, and
    the optimizer."""
    param = theta0.clone().requires_grad_()
    optimizer = factory([param])
    values = []
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
        values.append(param.detach().clone())
    return values, optimizer


def save_and_reload(optimizer: torch.optim.Optimizer, factory: OptimizerFactory, params: list[torch.Tensor]):
    """Round-trip ``optimizer.state_dict()`` through ``torch.save``/``torch.load(weights_only=True)`` into a
    fresh optimizer over copies of ``params``; return (new params, new optimizer)."""
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    new_params = [p.detach().clone().requires_grad_() for p in params]
    new_optimizer = factory(new_params)
    new_optimizer.load_state_dict(loaded)
    return new_params, new_optimizer


def assert_all_close(actual: list[torch.Tensor], expected: list[torch.Tensor], rtol: float, atol: float = 0.0) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


class Tiny(nn.Module):
    """A model with every parameter kind the registry splits on: embedding, norm, Linear weights and bias."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(self.norm(self.embed(x))))).square().mean()


def hidden_matrices_net() -> nn.Module:
    """A seeded MLP with a tall (40 x 24) and a wide (24 x 40) hidden matrix, a third one (30 x 24), a norm,
    biases and an output head (the last ``nn.Linear``), for the low-rank methods' reference tests."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(24, 40), nn.LayerNorm(40), nn.Tanh(), nn.Linear(40, 24), nn.Tanh(), nn.Linear(24, 30), nn.Tanh(),
        nn.Linear(30, 3),
    )  # fmt: skip


def train_regression(net: nn.Module, optimizer, steps: int = 12) -> None:
    """``steps`` steps of a mean-squared-error regression of :func:`hidden_matrices_net` on seeded data."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 24, generator=generator), torch.randn(16, 3, generator=generator)
        optimizer.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
