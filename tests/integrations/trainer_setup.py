"""What the trainer integration tests share: a tiny model, fixed batches, and the registry's optimizers."""

from __future__ import annotations

import warnings

import torch
from torch import nn

import memopt

#: every registry optimizer, and those stepped only as ``step(closure)`` at their registry settings (a class
#: attribute ``needs_closure = True``; PSGD's is a property that is True only for its Newton variant, which the
#: registry does not select)
ALL = sorted(memopt.list_optimizers())
CLOSURE = sorted(
    name for name in ALL if getattr(memopt.registry.specs.get_spec(name).cls, "needs_closure", False) is True
)  # fmt: skip


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


def batch(step: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``step``-th batch: fixed by its index, so a resumed loop sees the batches an uninterrupted one does."""
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randn(size, 8, generator=generator), torch.randn(size, 4, generator=generator)


def build(model: nn.Module, name: str) -> torch.optim.Optimizer:
    """The registry optimizer with its recommended settings (rank clamps on these small matrices are fine)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return memopt.build_optimizer(model, name, **memopt.recommended_hparams(name))


def parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]
