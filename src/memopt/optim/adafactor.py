"""Adafactor: factored second moments, relative step sizes and update clipping.

Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018
(arXiv 1804.04235), with the semantics of ``transformers.optimization.Adafactor`` (= fairseq's), which
tests hold it equal to. One step for a parameter ``theta`` with gradient ``g`` (``t`` counts from 1)::

    rho_t   = min(1e-6 t if warmup_init else 1e-2, 1 / sqrt(t))   if relative_step, else lr
    alpha_t = max(eps2, RMS(theta_{t-1})) * rho_t                  if scale_parameter, else rho_t
    beta_t  = 1 - t^decay_rate                                     (0 at t = 1: no bias correction needed)
    S       = g^2 + eps1
    ndim >= 2 (factored over the last two dims, leading dims batched):
        R <- beta_t R + (1 - beta_t) mean_{last dim}(S)
        C <- beta_t C + (1 - beta_t) mean_{second-to-last dim}(S)
        U = g / sqrt(R_i C_j / mean(R))
    ndim <= 1:  V <- beta_t V + (1 - beta_t) S;  U = g / sqrt(V)
    U       <- U / max(1, RMS(U) / clip_threshold)                  (update clipping)
    U       <- alpha_t U;  with beta1: M <- beta1 M + (1 - beta1) U, U <- M
    theta   <- theta - wd alpha_t theta - U

The relative step, parameter scaling and clipping act on the whole update, so Adafactor has its own step
on :class:`memopt.optim.base.MemoptBase` (the torch.optim contract, the per-parameter contract and the
state template) instead of the engine's pipeline. It computes in float32 for 16-bit parameters, keeping
every state (factored statistics, second moment, momentum) in float32 there by default, as
``transformers`` does. ``state_storage`` ("float32", "bfloat16" with optional ``stochastic_rounding``,
"8bit") chooses how the elementwise states (``exp_avg``, and ``exp_avg_sq`` of vectors) are held; the
factored row and column statistics are reduced states and stay in float32. The parameter
RMS that ``transformers`` records in its state is recomputed each step instead of stored, and
``param_groups[i]["lr"]`` is never modified (``lr`` stays ``None`` with ``relative_step=True``).

Sharded parameters (FSDP2, dim 0 cut across ranks; :mod:`memopt.state.sharding`): the row statistics
``R`` (and for 3+ dims also ``C``, whose dim 0 is then the parameter's) are row-sharded and updated
locally; for a matrix the column statistics ``C`` (a mean over the rows) are replicated, from one
all-reduce of ``n`` floats per step, and ``mean(R)``, ``RMS(U)`` and ``RMS(theta)`` each take one
all-reduce of a float.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from memopt.estimators.base import ParamStep
from memopt.optim.base import STORAGE_OPTIONS, MemoptBase
from memopt.optim.baselines import Params
from memopt.optim.template import StateSlot, raw
from memopt.state import quantization, sharding
from memopt.state.sharding import ShardSpec
from memopt.validation import check_fraction, check_non_negative, check_positive


def relative_step_size(step: int, *, warmup_init: bool) -> float:
    """The paper's relative step ``rho_t = min(1e-6 t if warmup_init else 1e-2, 1 / sqrt(t))``."""
    cap = 1e-6 * step if warmup_init else 1e-2
    return min(cap, 1.0 / math.sqrt(step))


def decay_coefficient(step: int, decay_rate: float) -> float:
    """The second-moment coefficient ``beta_t = 1 - t^decay_rate`` (``decay_rate=-0.8`` in the paper)."""
    return 1.0 - math.pow(step, decay_rate)


def rms(x: torch.Tensor, spec: ShardSpec | None = None) -> torch.Tensor:
    """Root mean square ``||x||_2 / sqrt(numel)`` as a 0-d tensor (no host synchronization); of the whole
    tensor when ``x`` is this rank's piece under ``spec``."""
    if spec is None or not spec.sharded:
        return torch.linalg.vector_norm(x) / math.sqrt(x.numel())
    return sharding.sum_of_squares(x, spec).sqrt() / math.sqrt(spec.numel)


def is_factored(param: torch.Tensor) -> bool:
    """Tensors of 2 or more dimensions keep factored (row and column) statistics."""
    return param.dim() >= 2


def state_shapes(param: torch.Tensor, group: dict) -> dict[str, tuple[int, ...]]:
    """The tensors Adafactor keeps for ``param`` in ``group``, with their shapes."""
    shape = tuple(param.shape)
    shapes = {"exp_avg": shape} if group["beta1"] is not None else {}
    if is_factored(param):
        shapes["exp_avg_sq_row"] = shape[:-1]
        shapes["exp_avg_sq_col"] = shape[:-2] + shape[-1:]
    else:
        shapes["exp_avg_sq"] = shape
    return shapes


def state_template(param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
    """Adafactor's state for ``param``: the step, momentum (with ``beta1``), and factored row/column
    statistics (every state's dim 0 is the parameter's, except a matrix's column statistics) or a full
    second moment."""
    template = {"step": raw(0)}
    shapes = state_shapes(param, group)
    if "exp_avg" in shapes:
        template["exp_avg"] = StateSlot("elementwise", shapes["exp_avg"])
    if is_factored(param):
        template["exp_avg_sq_row"] = StateSlot("reduced", shapes["exp_avg_sq_row"], sharded=True)
        col_sharded = param.dim() != 2
        template["exp_avg_sq_col"] = StateSlot("reduced", shapes["exp_avg_sq_col"], sharded=col_sharded)
    else:
        template["exp_avg_sq"] = StateSlot("elementwise", shapes["exp_avg_sq"], non_negative=True)
    return template


def factored_update(ps: ParamStep, beta: float, eps1: float) -> torch.Tensor:
    """Update the row/column statistics with ``S = g^2 + eps1`` and return ``g / sqrt(V_hat)`` (for this
    rank's rows of the gradient, ``ps.shard`` saying where they sit)."""
    grad, spec = ps.grad, ps.shard
    sq = grad.square().add_(eps1)
    row = ps.load("exp_avg_sq_row", grad.dtype)
    col = ps.load("exp_avg_sq_col", grad.dtype)
    row.mul_(beta).add_(sq.mean(dim=-1), alpha=1 - beta)
    col.mul_(beta).add_(sharding.mean(sq, -2, spec), alpha=1 - beta)  # over the rows: all ranks' for a matrix
    ps.store("exp_avg_sq_row", row)
    ps.store("exp_avg_sq_col", col)
    row_factor = (row / sharding.mean(row, -1, spec, keepdim=True)).rsqrt_().unsqueeze(-1)
    col_factor = col.unsqueeze(-2).rsqrt()
    return (row_factor * col_factor).mul_(grad)


def full_update(ps: ParamStep, beta: float, eps1: float) -> torch.Tensor:
    """Update the full second moment with ``S = g^2 + eps1`` and return ``g / sqrt(V)``."""
    sq = ps.grad.square().add_(eps1)
    acc = ps.load("exp_avg_sq", ps.grad.dtype)
    acc.mul_(beta).add_(sq, alpha=1 - beta)
    ps.store("exp_avg_sq", acc)
    return acc.rsqrt().mul_(ps.grad)


class Adafactor(MemoptBase):
    """Adafactor (Shazeer & Stern 2018) with ``transformers``' semantics; see the module docstring.

    Args:
        params: parameters or parameter groups.
        lr: external learning rate; must be ``None`` with ``relative_step=True`` (the default), which
            computes ``rho_t`` itself. With ``relative_step=False`` and ``scale_parameter=False`` it is an
            ordinary learning rate that LR schedulers can drive.
        eps: ``(eps1, eps2)``: added to squared gradients, and the floor of the parameter scale.
        clip_threshold: the update-clipping threshold ``d`` on ``RMS(U)``.
        decay_rate: exponent of ``beta_t = 1 - t^decay_rate`` (``<= 0``).
        beta1: first-moment coefficient, or ``None`` for none (the paper's memory-saving default).
        weight_decay: decoupled decay ``theta <- theta - wd * alpha_t * theta``.
        scale_parameter: multiply the step by ``max(eps2, RMS(theta))``.
        relative_step: use ``rho_t`` instead of ``lr``.
        warmup_init: with ``relative_step``, the cap ``1e-6 t`` (linear warm-up) instead of ``1e-2``.
        maximize: ascend instead of descend.
        state_storage: how ``exp_avg`` and vectors' ``exp_avg_sq`` are held: ``"default"`` (float32 for
            16-bit parameters, else their dtype), ``"float32"``, ``"bfloat16"``, ``"8bit"`` or ``"4bit"``.
        quant_block_size: elements per 8-bit block.
        stochastic_rounding: round bfloat16 states and parameters stochastically.

    References:
        Shazeer & Stern, ICML 2018, arXiv 1804.04235.
    """

    def __init__(
        self,
        params: Params,
        lr: float | None = None,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
        *,
        maximize: bool = False,
        state_storage: str = STORAGE_OPTIONS["state_storage"],
        quant_block_size: int = quantization.DEFAULT_BLOCK_SIZE,
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            eps=eps,
            clip_threshold=clip_threshold,
            decay_rate=decay_rate,
            beta1=beta1,
            weight_decay=weight_decay,
            scale_parameter=scale_parameter,
            relative_step=relative_step,
            warmup_init=warmup_init,
            maximize=maximize,
            state_storage=state_storage,
            quant_block_size=quant_block_size,
            stochastic_rounding=stochastic_rounding,
        )
        super().__init__(params, defaults)

    # ----------------------------------------------------------------------------------------- groups
    def _complete_group(self, group: dict) -> None:
        if isinstance(group["eps"], list):
            group["eps"] = tuple(group["eps"])

    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        lr, relative = group["lr"], group["relative_step"]
        if relative and lr is not None:
            raise ValueError(
                f"Invalid lr={lr!r} with relative_step=True: Adafactor then computes its own step "
                "min(1e-2, 1/sqrt(t)). Pass lr=None, or set relative_step=False (and usually "
                "scale_parameter=False) to use lr, e.g. with an LR scheduler."
            )
        if not relative:
            if lr is None:
                raise ValueError(
                    "Invalid lr=None with relative_step=False: give a learning rate (e.g. lr=1e-3), or set "
                    "relative_step=True for the paper's relative step size."
                )
            check_non_negative("lr", lr)
        if group["warmup_init"] and not relative:
            raise ValueError(
                "Invalid warmup_init=True with relative_step=False: warm-up initialization shapes the relative "
                "step size. Set relative_step=True, or warmup_init=False and warm up lr with a scheduler."
            )
        eps = group["eps"]
        if not isinstance(eps, tuple) or len(eps) != 2:
            raise ValueError(f"Invalid eps: {eps!r}. eps must be a pair (eps1, eps2), e.g. (1e-30, 1e-3).")
        check_non_negative("eps[0] (eps1)", eps[0])
        check_non_negative("eps[1] (eps2)", eps[1])
        check_positive("clip_threshold", group["clip_threshold"])
        decay = group["decay_rate"]
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not -math.inf < decay <= 0:
            raise ValueError(
                f"Invalid decay_rate: {decay!r}. decay_rate must be a finite number <= 0 (the paper uses -0.8): "
                "beta_t = 1 - t^decay_rate must lie in [0, 1)."
            )
        if group["beta1"] is not None:
            check_fraction("beta1", group["beta1"], allow_one=False)
        check_non_negative("weight_decay", group["weight_decay"])

    # ------------------------------------------------------------------------------------------- state
    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        return state_template(param, group)

    # -------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step. ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group_index, group in enumerate(self.param_groups):
            for index, param, name in self._params_with_grad(group, group_index):
                if param.numel() > 0:
                    self._update(self._begin(param, group, index, name), group)
        return loss

    def _step_size(self, work: torch.Tensor, group: dict, step: int, spec: ShardSpec) -> torch.Tensor | float:
        """``alpha_t`` (a 0-d tensor when it depends on the parameter's RMS)."""
        rho = relative_step_size(step, warmup_init=group["warmup_init"]) if group["relative_step"] else group["lr"]
        if not group["scale_parameter"]:
            return rho
        return rms(work, spec).clamp(min=group["eps"][1]) * rho

    def _update(self, ps: ParamStep, group: dict) -> None:
        work, step = ps.work, ps.step
        alpha = self._step_size(work, group, step, ps.shard)
        beta = decay_coefficient(step, group["decay_rate"])
        eps1 = group["eps"][0]
        update = factored_update(ps, beta, eps1) if is_factored(work) else full_update(ps, beta, eps1)
        update.div_((rms(update, ps.shard) / group["clip_threshold"]).clamp_(min=1.0))
        update.mul_(alpha)
        beta1 = group["beta1"]
        if beta1 is not None:
            exp_avg = ps.load("exp_avg", work.dtype)
            exp_avg.mul_(beta1).add_(update, alpha=1 - beta1)
            ps.store("exp_avg", exp_avg)
            update = exp_avg
        wd = group["weight_decay"]
        if wd != 0:  # theta <- theta - wd alpha theta, rounded as transformers rounds it
            if torch.is_tensor(alpha):
                work.addcmul_(work, -(wd * alpha))
            else:
                work.add_(work, alpha=-wd * alpha)
        work.sub_(update)
        ps.write_back()
