"""The Subset-Norm / Subspace-Momentum family and AdaGrad-Norm, as presets of the memopt engine.

Nguyen & Nguyen, "Lean and Mean Adaptive Optimization via Subset-Norm and Subspace-Momentum with
Convergence Guarantees", ICML 2025 (arXiv 2411.07120); Ward, Wu & Bottou, "AdaGrad stepsizes", JMLR 2020.

Each preset is a set of defaults; any parameter group may override them. ``subset_size=None`` in a group
gives it coordinate-wise second moments and ``rank=None`` plain EMA momentum, which is how the paper
treats embeddings, norms and biases (``memopt.build_optimizer`` makes that split for you).

Differences from the paper's code (timmytonga/sn-sm), deliberate defaults with an option each to reproduce
the authors' runs (README, "Migrating from the papers' code"): eps is added after bias correction, PyTorch
style (``eps_placement="before_bias_correction"``: the authors' ``sqrt(v) + eps`` before the correction, an
effective eps of ``eps / sqrt(1 - beta2^t)``); decoupled weight decay is applied before the update with the
base lr, ``torch.optim.AdamW`` style (``weight_decay_placement="after_update"``: the authors' order); the
default eps is 1e-8 (theirs 1e-6: pass ``eps=1e-6``) and the default subset size ``"heuristics"`` (their
script's ``-2``: pass ``subset_size=-2``). Their Subspace-Momentum reset at a rebuild still updates the old
momentum for that step (the zeros take effect one step later); memopt's ``proj_policy="reset"`` zeroes it
before the step's EMA and does not reproduce that defect.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from memopt.estimators.registry import MOMENTUM, SECOND_MOMENT
from memopt.optim.baselines import Params
from memopt.optim.engine import ENGINE_HYPERPARAMETERS, MemoptOptimizer

_ESTIMATOR_CHOICES = ("momentum_type", "second_moment_type")


def engine_preset(class_name: str, doc: str, **defaults: Any) -> type[MemoptOptimizer]:
    """A preset class of the engine: ``defaults`` fix its estimators (``momentum_type``,
    ``second_moment_type``) and change any other default (``lr``, ``betas``, ...).

    What a registry entry needs for a new estimator without a hand-written class: the constructor takes
    ``params`` and every engine and estimator hyperparameter by keyword, and its signature lists them, so
    ``memopt.build_optimizer`` and ``accepted_hparams`` see them. The class belongs to the calling module.
    """
    fixed = {key: defaults.pop(key) for key in _ESTIMATOR_CHOICES if key in defaults}
    momentum = MOMENTUM[fixed.get("momentum_type", ENGINE_HYPERPARAMETERS["momentum_type"])]
    second = SECOND_MOMENT[fixed.get("second_moment_type", ENGINE_HYPERPARAMETERS["second_moment_type"])]
    settings = {k: v for k, v in ENGINE_HYPERPARAMETERS.items() if k not in _ESTIMATOR_CHOICES}
    for estimator in (momentum, second):
        settings.update(estimator.hyperparameters)
    unknown = sorted(set(defaults) - set(settings))
    if unknown:
        raise ValueError(
            f"engine_preset({class_name!r}): {unknown} are not hyperparameters of the engine or its estimators."
        )
    settings.update(defaults)

    def __init__(self: MemoptOptimizer, params: Params, **hparams: Any) -> None:
        unknown = sorted(set(hparams) - set(settings))
        if unknown:
            raise TypeError(f"{class_name}() got unexpected hyperparameters {unknown}; it takes {sorted(settings)}.")
        MemoptOptimizer.__init__(self, params, {**settings, **hparams, **fixed})

    positional = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("self", "params")]
    keywords = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in settings.items()]
    __init__.__signature__ = inspect.Signature(positional + keywords)  # type: ignore[attr-defined]
    module = sys._getframe(1).f_globals.get("__name__", __name__)
    return type(class_name, (MemoptOptimizer,), {"__init__": __init__, "__doc__": doc, "__module__": module})


def _subset_norm_settings(
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    subset_size: int | str | None,
    *,
    bias_correction: bool,
    maximize: bool,
    foreach: bool | None,
) -> dict[str, Any]:
    """Defaults shared by the Subset-Norm presets (EMA or no momentum, decoupled weight decay)."""
    return dict(
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        decoupled_weight_decay=True,
        bias_correction=bias_correction,
        subset_size=subset_size,
        maximize=maximize,
        foreach=foreach,
        momentum_type="ema",
        second_moment_type="subset_norm",
    )


def _subspace_settings(
    rank: int | None,
    update_proj_gap: int,
    proj_type: str,
    proj_policy: str,
    proj_seed: int,
    proj_schedule: str,
    proj_matmul_dtype: str | None,
) -> dict[str, Any]:
    return dict(
        momentum_type="subspace",
        rank=rank,
        update_proj_gap=update_proj_gap,
        proj_type=proj_type,
        proj_policy=proj_policy,
        proj_seed=proj_seed,
        proj_schedule=proj_schedule,
        proj_matmul_dtype=proj_matmul_dtype,
    )


class AdamWSN(MemoptOptimizer):
    """AdamW with Subset-Norm step sizes (Adam-SN).

    ``m_t = beta1 m + (1 - beta1) g``; per subset ``i``: ``v_{t,i} = beta2 v + (1 - beta2) sum_{j in i} g_j^2``;
    ``theta_j <- theta_j (1 - lr wd) - lr / (1 - beta1^t) * m_{t,j} / (sqrt(v_{t,i} / (1 - beta2^t)) + eps)``.
    ``subset_size``: ``"heuristics"`` (one accumulator per row/column of a matrix), ``k > 0`` or ``-c``.
    The paper recommends about 10x Adam's learning rate.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        subset_size: int | str | None = "heuristics",
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        **settings: Any,
    ) -> None:
        defaults = _subset_norm_settings(
            lr, betas, eps, weight_decay, subset_size, bias_correction=True, maximize=maximize, foreach=foreach
        )
        super().__init__(params, {**defaults, **settings})


class AdamWSNSM(AdamWSN):
    """AdamW with Subset-Norm step sizes and Subspace-Momentum (Adam-SNSM).

    ``M_t = beta1 M + (1 - beta1) P(g)``; ``N_t = P*(M_t) + (g - P*(P(g)))``; the Subset-Norm denominator
    is computed from the full gradient; ``theta <- theta (1 - lr wd) - lr / (1 - beta1^t) * N_t / D_t``.
    ``rank``, ``update_proj_gap``, ``proj_type`` (``svd``, ``randomized``, ``topk``, ``uniform``) and
    ``proj_policy`` (``reset``, ``keep``, ``transform``) and ``proj_matmul_dtype`` (``None``: the projections
    multiply in the gradient's dtype; ``"bfloat16"``: bfloat16 operands, float32 accumulation) are described in
    :mod:`memopt.estimators.subspace_momentum`. Parameters must be matrices unless their group has
    ``rank=None``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        subset_size: int | str | None = "heuristics",
        rank: int | None = 128,
        update_proj_gap: int = 200,
        proj_type: str = "svd",
        proj_policy: str = "reset",
        proj_seed: int = 0,
        proj_schedule: str = "sn-sm",
        *,
        proj_matmul_dtype: str | None = None,
        maximize: bool = False,
        foreach: bool | None = None,
        **settings: Any,
    ) -> None:
        subspace = _subspace_settings(
            rank, update_proj_gap, proj_type, proj_policy, proj_seed, proj_schedule, proj_matmul_dtype
        )
        super().__init__(
            params, lr, betas, eps, weight_decay, subset_size, maximize=maximize, foreach=foreach, **subspace,
            **settings,
        )  # fmt: skip


class AdaGradSN(MemoptOptimizer):
    """AdaGrad with Subset-Norm step sizes (AdaGrad-SN), with the paper's EMA momentum on the numerator.

    ``m_t = beta1 m + (1 - beta1) g`` (no bias correction); ``v_{t,i} = v_{t-1,i} + sum_{j in i} g_j^2``;
    ``theta_j <- theta_j (1 - lr wd) - lr * m_{t,j} / (sqrt(v_{t,i}) + eps)``. ``betas[1]`` must be 1.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 1.0),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        subset_size: int | str | None = "heuristics",
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        **settings: Any,
    ) -> None:
        defaults = _subset_norm_settings(
            lr, betas, eps, weight_decay, subset_size, bias_correction=False, maximize=maximize, foreach=foreach
        )
        super().__init__(params, {**defaults, **settings})


class AdaGradSNSM(AdaGradSN):
    """AdaGrad-SN with Subspace-Momentum (AdaGrad-SNSM); see :class:`AdamWSNSM` for the projector options."""

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 1.0),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        subset_size: int | str | None = "heuristics",
        rank: int | None = 128,
        update_proj_gap: int = 200,
        proj_type: str = "svd",
        proj_policy: str = "reset",
        proj_seed: int = 0,
        proj_schedule: str = "sn-sm",
        *,
        proj_matmul_dtype: str | None = None,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        subspace = _subspace_settings(
            rank, update_proj_gap, proj_type, proj_policy, proj_seed, proj_schedule, proj_matmul_dtype
        )
        super().__init__(
            params, lr, betas, eps, weight_decay, subset_size, maximize=maximize, foreach=foreach, **subspace
        )


class RMSPropSN(MemoptOptimizer):
    """RMSProp with Subset-Norm step sizes (RMSProp-SN): no momentum, no bias correction.

    ``v_{t,i} = beta2 v_{t-1,i} + (1 - beta2) sum_{j in i} g_j^2``;
    ``theta_j <- theta_j (1 - lr wd) - lr * g_j / (sqrt(v_{t,i}) + eps)``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.0, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        subset_size: int | str | None = "heuristics",
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = _subset_norm_settings(
            lr, betas, eps, weight_decay, subset_size, bias_correction=False, maximize=maximize, foreach=foreach
        )
        super().__init__(params, defaults)


class AdaGradNorm(MemoptOptimizer):
    """AdaGrad-Norm: one scalar step size per tensor, or per group with ``global_norm=True``.

    ``b_t^2 = b_{t-1}^2 + ||g_t||^2`` (``b_0^2`` = ``initial_accumulator_value``);
    ``theta <- theta (1 - lr wd) - lr * N_t / (b_t + eps)`` with ``N_t = g_t``, or an EMA of gradients
    when ``momentum > 0`` (without bias correction).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1.0,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        global_norm: bool = False,
        momentum: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=(momentum, 1.0),
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=True,
            bias_correction=False,
            initial_accumulator_value=initial_accumulator_value,
            global_norm=global_norm,
            maximize=maximize,
            foreach=foreach,
            momentum_type="ema",
            second_moment_type="adagrad_norm",
        )
        super().__init__(params, defaults)


class AdamW8bit(MemoptOptimizer):
    """AdamW whose two moments are stored in 8 bits, block-wise quantized (Dettmers et al., ICLR 2022).

    The update is AdamW's, computed in float32 from the dequantized moments; ``exp_avg`` uses the signed and
    ``exp_avg_sq`` the unsigned dynamic map, one float32 absmax per ``quant_block_size`` elements (2.03
    bytes/parameter instead of 8). Tensors under 4096 elements keep float32 moments.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        quant_block_size: int = 256,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=True,
            bias_correction=True,
            maximize=maximize,
            momentum_type="ema",
            second_moment_type="coordinate",
            state_storage="8bit",
            quant_block_size=quant_block_size,
        )
        super().__init__(params, defaults)


class AdamWSNSM8bit(AdamWSNSM):
    """AdamW-SNSM with 8-bit momentum: the subspace momentum (and the plain groups' Adam moments) are
    stored block-wise quantized in 8 bits; Subset-Norm accumulators and projector bases stay in float32."""

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        subset_size: int | str | None = "heuristics",
        rank: int | None = 128,
        update_proj_gap: int = 200,
        proj_type: str = "svd",
        proj_policy: str = "reset",
        proj_seed: int = 0,
        proj_schedule: str = "sn-sm",
        quant_block_size: int = 256,
        *,
        proj_matmul_dtype: str | None = None,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, subset_size, rank, update_proj_gap, proj_type, proj_policy,
            proj_seed, proj_schedule, proj_matmul_dtype=proj_matmul_dtype, maximize=maximize, state_storage="8bit",
            quant_block_size=quant_block_size,
        )  # fmt: skip
