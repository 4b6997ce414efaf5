"""AdaGrad and Adam with extreme-tensoring second moments (ET), as presets of the memopt engine.

Chen, Agarwal, Hazan, Zhang & Zhang, "Extreme Tensoring for Low-Memory Preconditioning", ICLR 2020
(arXiv 1902.04620). The estimator, its tensor index (how a shape is split into ``et_order`` modes,
padding for primes) and what was verified against the paper are described in
:mod:`memopt.estimators.extreme_tensoring`.

ET keeps ``sum_i d_i`` numbers per parameter instead of ``numel``. Its denominator is a product of
per-mode slice sums, so at one learning rate a tensor of ``d`` entries steps about ``d^((p-1)/(2p))``
times less than with AdaGrad/Adam (``p`` = ``et_order``): ET usually wants a larger learning rate, and
``et_order=1`` is exactly AdaGrad / Adam. ``memopt.build_optimizer`` gives every parameter to ET
(embeddings, norms and biases included), as the paper tensors the whole model for its memory target.
"""

from __future__ import annotations

from typing import Any

from memopt.optim.baselines import Params
from memopt.optim.engine import MemoptOptimizer


class ETAdaGrad(MemoptOptimizer):
    """AdaGrad with an extreme-tensoring preconditioner (ET-AdaGrad).

    ``g <- g + wd * theta``; per mode ``i``: ``h^(i) <- h^(i) + S^(i)(g^2)`` (slice sums);
    ``D = prod_i h^(i)^(1/(2p)) + eps``; ``theta <- theta - lr / (1 + (t - 1) lr_decay) * g / D``.
    ``et_order=1`` equals ``torch.optim.Adagrad`` (same arguments, same eps handling).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        eps: float = 1e-10,
        et_order: int | None = 3,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            decoupled_weight_decay=False,
            eps=eps,
            et_order=et_order,
            bias_correction=False,
            maximize=maximize,
            foreach=foreach,
            momentum_type="none",
            second_moment_type="extreme_tensoring",
        )
        super().__init__(params, defaults)

    #: no momentum: ``betas`` stays out of ``defaults`` (``OneCycleLR(cycle_momentum=True)`` refuses it)
    DERIVED = ("betas",)

    def _derived(self, group: dict) -> dict[str, Any]:
        return {"betas": (0.0, 1.0)}


class ETAdam(MemoptOptimizer):
    """Adam (AdamW-style decoupled weight decay) with an extreme-tensoring second moment (ET-Adam).

    ``m_t = beta1 m + (1 - beta1) g``; per mode ``i``: ``h^(i) <- beta2 h^(i) + (1 - beta2) S^(i)(g^2)``;
    ``D = prod_i h^(i)^(1/(2p)) / sqrt(1 - beta2^t) + eps``;
    ``theta <- theta (1 - lr wd) - lr / (1 - beta1^t) * m_t / D`` (no bias corrections with
    ``bias_correction=False``; ``betas=(0, alpha)`` and ``bias_correction=False`` is ET-RMSProp).
    ``et_order=1`` equals ``torch.optim.AdamW``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        et_order: int | None = 3,
        *,
        bias_correction: bool = True,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=True,
            et_order=et_order,
            bias_correction=bias_correction,
            maximize=maximize,
            foreach=foreach,
            momentum_type="ema",
            second_moment_type="extreme_tensoring",
        )
        super().__init__(params, defaults)
