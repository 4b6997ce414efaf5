"""Dispatch to ``torch.optim``'s fused Adam kernels where memopt's math is exactly Adam.

A group whose estimators are EMA momentum and coordinate-wise EMA second moments, with bias correction,
is Adam/AdamW, and torch ships a fused single-pass kernel for it (``torch._fused_adam_`` /
``torch._fused_adamw_``, on CPU since torch 2.4). The engine's fast path hands such groups to it instead
of running its own multi-pass foreach code; the result equals ``torch.optim.AdamW(fused=True)``.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from memopt.estimators.base import ParamStep


def fused_adam_applies(group: dict, momentum_kind: str, second_kind: str) -> bool:
    """Whether ``group``'s update is exactly Adam/AdamW with the options torch's fused kernel has."""
    return (
        momentum_kind == "ema"
        and second_kind == "coordinate"
        and group["bias_correction"]
        and 0 < group["betas"][0]
        and group["betas"][1] < 1
        and not group["centered"]
        and group["lr_decay"] == 0
        and group["update_momentum"] == 0
        and group["eps_placement"] == "after_bias_correction"
        and group["weight_decay_placement"] == "before_update"
        and hasattr(torch, "_fused_adamw_")
    )


def fused_adam_step(steps: list[ParamStep], group: dict) -> None:
    """One Adam/AdamW step with torch's fused kernel. Gradients are already processed (maximize and
    coupled weight decay applied); decoupled weight decay is left to the kernel."""
    beta1, beta2 = group["betas"]
    decoupled = group["weight_decay"] != 0 and group["decoupled_weight_decay"]
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    buckets: dict[tuple, list[ParamStep]] = defaultdict(list)
    for ps in steps:
        buckets[(ps.work.device, ps.work.dtype)].append(ps)
    for (device, _), bucket in buckets.items():
        kernel(
            [ps.work for ps in bucket],
            [ps.grad for ps in bucket],
            [ps.state["exp_avg"] for ps in bucket],
            [ps.state["exp_avg_sq"] for ps in bucket],
            [],
            [torch.tensor(float(ps.step), device=device) for ps in bucket],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"] if decoupled else 0.0,
            eps=group["eps"],
            amsgrad=False,
            maximize=False,
        )
