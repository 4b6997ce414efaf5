"""Optimizer state (and float32 master weights) off the parameters' device: in host memory or on disk.

``offload(name, model, to="cpu" | "disk", path=DIR, **hparams)`` builds the registry optimizer ``name`` (an
engine preset: any state format, ``state_storage="8bit"`` and ``"4bit"`` included) as an
:class:`~memopt.offload.optimizer.OffloadOptimizer`: each parameter steps as soon as its gradient is ready
(post-accumulate-grad hooks), its state held on the host or in files under ``path`` with a bounded window in
memory, prefetched in backward order. Anchors: ZeRO-Offload (Ren et al., arXiv 2101.06840), ZeRO-Infinity
(Rajbhandari et al., arXiv 2104.07857), torchao's ``CPUOffloadOptimizer``, Fuyou (Liao et al., "Adding NVMe
SSDs to Enable and Accelerate 100B Model Fine-tuning on a Single GPU", arXiv 2403.06504). None of them
offloads a compressed state; here an 8-bit, Subset-Norm or SNSM state moves 2-8x fewer bytes than AdamW's.

The facade exports the function: ``memopt.offload`` is :func:`offload`, not this package, once ``memopt`` is
imported; reach the modules with ``from memopt.offload import disk`` or ``from memopt.offload.disk import ...``.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from memopt.offload.disk import OffloadCapacityError, OffloadError
from memopt.offload.optimizer import TIERS, OffloadOptimizer
from memopt.optim.engine import MemoptOptimizer
from memopt.registry.specs import SplitRule, build_optimizer, get_spec, list_optimizers


def offload(
    name: str,
    model: nn.Module,
    to: str = "cpu",
    path: str | os.PathLike | None = None,
    *,
    max_grad_norm: float | None = None,
    accumulation_steps: int = 1,
    split: SplitRule | None = None,
    **hparams: Any,
) -> OffloadOptimizer:
    """The registry optimizer ``name`` for ``model`` (as :func:`memopt.build_optimizer` with ``split`` and
    ``hparams``), its state in host memory (``to="cpu"``) or in files under the folder ``path``
    (``to="disk"``), stepped from gradient hooks.

    ``accumulation_steps``: backward passes per step (parameters step on the last); ``max_grad_norm``: clip
    the global gradient norm (computed over all gradients first, then the per-parameter steps). Call
    ``optimizer.step()`` after the last backward pass and ``zero_grad()`` as usual.

    Raises:
        ValueError: an unknown or non-engine optimizer name, a bad option, or a disk too small for the state
            (:class:`OffloadCapacityError`, also an :class:`OffloadError`).
    """
    spec = get_spec(name)
    if not issubclass(spec.cls, MemoptOptimizer):
        raise ValueError(
            f"offload({name!r}): {spec.cls.__name__} is not built on the memopt engine; offload takes engine "
            f"optimizers: {', '.join(engine_optimizers())}."
        )
    return OffloadOptimizer(
        model,
        lambda host: build_optimizer(host, name, split=split, **hparams),
        to=to,
        path=path,
        max_grad_norm=max_grad_norm,
        accumulation_steps=accumulation_steps,
    )


def engine_optimizers() -> list[str]:
    """The registry names :func:`offload` takes: those whose class is built on the engine."""
    return [n for n in list_optimizers() if issubclass(get_spec(n).cls, MemoptOptimizer)]


__all__ = ["TIERS", "OffloadCapacityError", "OffloadError", "OffloadOptimizer", "engine_optimizers", "offload"]
