"""Tiny models and training runs shared by the offload tests (no tests here)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from memopt.registry.specs import accepted_hparams

#: hyperparameters that make the compressed presets compress tiny layers
SMALL = {"subset_size": 16, "rank": 4, "update_proj_gap": 5}


def hparams_for(name: str, **extra) -> dict:
    """:data:`SMALL` where ``name`` takes them, then ``extra``."""
    accepted = accepted_hparams(name)
    return {**{k: v for k, v in SMALL.items() if k in accepted}, **extra}


def tiny_model(seed: int = 0, layers: int = 2, width: int = 64, dtype: torch.dtype = torch.float32) -> nn.Module:
    """``layers`` Linear(width, width) + tanh, then a Linear(width, 8) head: the square weights have 4096
    elements, so 8-bit and 4-bit states are quantized (smaller states stay float32)."""
    torch.manual_seed(seed)
    blocks: list[nn.Module] = []
    for _ in range(layers):
        blocks += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*blocks, nn.Linear(width, 8)).to(dtype)


def batches(steps: int, accumulation: int, width: int = 64, seed: int = 1) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(4, width, generator=generator) for _ in range(accumulation)] for _ in range(steps)]


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: list[list[torch.Tensor]],
    *,
    clip: float | None = None,
    external_clip: bool = False,
    after_step: Callable[[int], None] | None = None,
) -> None:
    """Steps over ``data`` (a list of microbatch lists); ``external_clip``: clip the model's gradients with
    ``torch.nn.utils.clip_grad_norm_`` before ``step()`` (the plain optimizer's way)."""
    dtype = next(model.parameters()).dtype
    for index, microbatches in enumerate(data):
        for x in microbatches:
            (model(x.to(dtype)).float().pow(2).mean() / len(microbatches)).backward()
        if external_clip and clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(index + 1)


def assert_same_tensors(a, b, where: str = "") -> None:
    """Nested state dicts (or tensor lists) equal bit for bit."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: values differ"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(a, key=str)} != {sorted(b, key=str)}"
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
