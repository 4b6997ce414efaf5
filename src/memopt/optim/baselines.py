"""The classic optimizers as presets of the memopt engine, numerically equal to ``torch.optim``.

They exist so that every comparison runs through one engine (same state accounting, same state storage,
same fast path), and so that the engine's parts are checked against ``torch.optim`` where the math
coincides. Defaults and hyperparameter names follow ``torch.optim``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from memopt.optim.engine import MemoptOptimizer

Params = Iterable[torch.Tensor] | Iterable[dict]


class SGD(MemoptOptimizer):
    """Stochastic gradient descent with optional heavy-ball or Nesterov momentum (``torch.optim.SGD``).

    ``g <- g + wd * theta``; ``b_1 = g_1``, ``b_t = mu b_{t-1} + (1 - dampening) g_t``;
    ``theta <- theta - lr * (g_t + mu b_t if nesterov else b_t)``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            decoupled_weight_decay=False,
            bias_correction=False,
            maximize=maximize,
            foreach=foreach,
            momentum_type="heavy_ball",
            second_moment_type="none",
        )
        super().__init__(params, defaults)

    #: the heavy-ball estimator reads ``momentum``; the unused ``betas`` stays out of ``defaults``, so that
    #: ``OneCycleLR`` / ``CyclicLR`` cycle ``momentum`` as they do for ``torch.optim.SGD``
    DERIVED = ("betas",)

    def _derived(self, group: dict) -> dict[str, Any]:
        return {"betas": (0.0, 0.0)}


class Adagrad(MemoptOptimizer):
    """AdaGrad (Duchi, Hazan & Singer 2011) as in ``torch.optim.Adagrad``.

    ``g <- g + wd * theta``; ``S_t = S_{t-1} + g_t^2`` (``S_0`` = ``initial_accumulator_value``);
    ``theta <- theta - lr / (1 + (t - 1) lr_decay) * g_t / (sqrt(S_t) + eps)``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            decoupled_weight_decay=False,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            bias_correction=False,
            maximize=maximize,
            foreach=foreach,
            momentum_type="none",
            second_moment_type="coordinate",
        )
        super().__init__(params, defaults)

    #: no momentum: like ``torch.optim.Adagrad``, ``defaults`` has neither ``momentum`` nor ``betas``, so that
    #: ``OneCycleLR(cycle_momentum=True)`` refuses it instead of cycling a ``betas[0]`` nothing reads
    DERIVED = ("betas",)

    def _derived(self, group: dict) -> dict[str, Any]:
        return {"betas": (0.0, 1.0)}


class RMSprop(MemoptOptimizer):
    """RMSProp (Tieleman & Hinton 2012) as in ``torch.optim.RMSprop``.

    ``V_t = alpha V_{t-1} + (1 - alpha) g_t^2`` (centered: minus the squared EMA of ``g``);
    ``U = g_t / (sqrt(V_t) + eps)``; with momentum ``B_t = mu B_{t-1} + U``; ``theta <- theta - lr * B_t``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=False,
            momentum=momentum,
            centered=centered,
            bias_correction=False,
            maximize=maximize,
            foreach=foreach,
            momentum_type="none",
            second_moment_type="coordinate",
        )
        super().__init__(params, defaults)

    #: the group holds torch's ``alpha`` and ``momentum`` (what ``OneCycleLR`` / ``CyclicLR`` cycle); the engine's
    #: ``betas = (0, alpha)`` and ``update_momentum = momentum`` follow them at every step
    DERIVED = ("betas", "update_momentum")

    def _derived(self, group: dict) -> dict[str, Any]:
        # groups saved before RMSprop kept torch's names hold only the engine's
        alpha = group.setdefault("alpha", group["betas"][1] if "betas" in group else 0.99)
        momentum = group.setdefault("momentum", group.get("update_momentum", 0.0))
        return {"betas": (0.0, alpha), "update_momentum": momentum}


class Adam(MemoptOptimizer):
    """Adam (Kingma & Ba 2015) as in ``torch.optim.Adam``.

    ``m_t = beta1 m + (1 - beta1) g``, ``v_t = beta2 v + (1 - beta2) g^2``,
    ``theta <- theta - lr / (1 - beta1^t) * m_t / (sqrt(v_t / (1 - beta2^t)) + eps)``; weight decay is
    coupled (added to ``g``) unless ``decoupled_weight_decay=True`` (AdamW).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            bias_correction=True,
            maximize=maximize,
            foreach=foreach,
            momentum_type="ema",
            second_moment_type="coordinate",
        )
        super().__init__(params, defaults)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019) as in ``torch.optim.AdamW``: Adam with decoupled weight decay
    ``theta <- theta (1 - lr wd)`` applied before the Adam step."""

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, decoupled_weight_decay=True, maximize=maximize, foreach=foreach
        )
