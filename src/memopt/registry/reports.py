"""How much optimizer-state memory each registry optimizer needs on a given model: a table of
:func:`memopt.state.accounting.state_bytes` measured after one step of each."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from memopt.registry.specs import build_optimizer
from memopt.state.accounting import state_bytes


@dataclass(frozen=True)
class StateMemoryRow:
    """One optimizer's state memory on a model, and its share of the reference optimizer's."""

    name: str
    bytes: int
    percent_of_reference: float


def state_memory_report(
    model: nn.Module,
    names: Iterable[str],
    hparams: dict[str, dict[str, Any]] | None = None,
    *,
    build: Callable[..., Optimizer] | None = None,
    reference: str = "adamw",
    seed: int = 0,
) -> list[StateMemoryRow]:
    """State bytes of each optimizer in ``names`` (and ``reference``) on ``model``, after one step.

    One step with seeded random gradients creates every state, projector bases included (optimizers that
    need a closure, such as META-STORM, create theirs with ``prepare_state()`` instead); the model's
    parameters and gradients are restored afterwards. A model on the meta device is measured without
    allocating (its state tensors have real shapes and dtypes but no storage). ``hparams[name]`` are passed to
    ``build(model, name, **hparams[name])``, which defaults to ``memopt.build_optimizer``.
    """
    build = build or build_optimizer
    names = list(names)
    order = [reference, *[n for n in names if n != reference]]
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [(p.detach().clone(), p.grad) for p in params]
    generator = torch.Generator().manual_seed(seed)
    measured: dict[str, int] = {}
    try:
        for name in order:
            optimizer = build(model, name, **(hparams or {}).get(name, {}))
            for p in params:
                if p.device.type == "meta":  # a model planned without memory: shapes and dtypes only
                    p.grad = torch.empty_like(p)
                else:
                    p.grad = torch.randn(p.shape, generator=generator).to(device=p.device, dtype=p.dtype)
            if getattr(optimizer, "needs_closure", False):
                # a closure would re-evaluate a model this function cannot run; the state a first step
                # creates is created without one
                optimizer.prepare_state()
            else:
                optimizer.step()
            measured[name] = state_bytes(optimizer)
            del optimizer
            with torch.no_grad():
                for p, (value, _) in zip(params, saved):
                    p.copy_(value)
    finally:
        for p, (_, grad) in zip(params, saved):
            p.grad = grad
    base = measured[reference]
    return [StateMemoryRow(n, measured[n], 100.0 * measured[n] / base if base else float("nan")) for n in order]


def format_state_report(rows: list[StateMemoryRow], reference: str = "adamw") -> str:
    """A plain-text table of a :func:`state_memory_report`."""
    lines = [f"{'optimizer':<16}{'state MiB':>12}{'% of ' + reference:>12}"]
    lines += [f"{r.name:<16}{r.bytes / 2**20:>12.2f}{r.percent_of_reference:>11.1f}%" for r in rows]
    return "\n".join(lines)
