"""The modular arithmetic task of the grokking literature, generated locally, and small models for it.

Equations ``x * y mod p`` (or ``+``, ``-``) with ``x`` in ``[0, p)`` and ``y`` in ``[1, p)`` (the setting of
Grokfast's ``main.py``: 97 * 96 = 9312 equations for ``p = 97``), split at random into a training and a
validation half. A model sees the pair ``(x, y)`` and predicts the residue; accuracy is on the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

OPERATIONS = {
    "mul": lambda x, y, p: (x * y) % p,
    "add": lambda x, y, p: (x + y) % p,
    "sub": lambda x, y, p: (x - y) % p,
}


@dataclass(frozen=True)
class ModularSplit:
    """Inputs ``(n, 2)`` (long) and labels ``(n,)`` of the training and validation equations."""

    p: int
    train_inputs: torch.Tensor
    train_labels: torch.Tensor
    val_inputs: torch.Tensor
    val_labels: torch.Tensor


def modular_arithmetic(p: int = 97, op: str = "mul", train_fraction: float = 0.5, seed: int = 0) -> ModularSplit:
    """All equations ``x op y mod p`` (``x`` in [0, p), ``y`` in [1, p)), split at random by ``seed``."""
    if op not in OPERATIONS:
        raise ValueError(f"Unknown operation {op!r}; choose one of {sorted(OPERATIONS)}.")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction!r}.")
    x, y = torch.meshgrid(torch.arange(p), torch.arange(1, p), indexing="ij")
    x, y = x.flatten(), y.flatten()
    labels = OPERATIONS[op](x, y, p)
    inputs = torch.stack([x, y], dim=1)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_train = round(train_fraction * len(labels))
    train, val = order[:n_train], order[n_train:]
    return ModularSplit(p, inputs[train], labels[train], inputs[val], labels[val])


class ModularMLP(nn.Module):
    """Embed both operands (one shared table), concatenate, one hidden ReLU layer, logits over residues."""

    def __init__(self, p: int, embed_dim: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(p, embed_dim)
        self.hidden = nn.Linear(2 * embed_dim, hidden)
        self.out = nn.Linear(hidden, p)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        e = self.embed(pairs).flatten(1)
        return self.out(torch.relu(self.hidden(e)))


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of equations whose residue the model predicts (argmax of the logits)."""
    return (model(inputs).argmax(dim=-1) == labels).double().mean().item()
