"""Muon for the hidden matrices, AdamW for everything else, in one optimizer.

Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024,
kellerjordan.github.io/posts/muon), with the learning-rate scaling of Liu et al., "Muon is Scalable for LLM
Training" (arXiv 2502.16982). A group with ``use_muon=True`` (2-D parameters only) steps::

    B_t = mu B_{t-1} + (1 - mu) G_t                        (momentum, torch's ``lerp``)
    U_t = (1 - mu) G_t + mu B_t  if nesterov else B_t
    O_t = NewtonSchulz5(U_t)                               (about U S' V^T: singular values near 1, in bfloat16)
    W_t = W_{t-1} (1 - lr wd) - lr * s(m, n) * O_t          (s = 0.2 sqrt(max(m, n)) for "match_rms_adamw",
                                                             sqrt(max(1, m / n)) for "original")

and a group with ``use_muon=False`` steps as ``torch.optim.AdamW`` (decoupled weight decay, torch's
bias corrections and ``eps`` outside the corrected square root). With ``adjust_lr_fn="match_rms_adamw"``
(the default here) Muon's update has AdamW's typical RMS, so one ``lr`` and ``weight_decay`` serve both
groups (Liu et al.). The Newton-Schulz iteration and the lr scaling are torch's own
(``torch.optim._muon``); the per-step arithmetic is ``torch.optim.Muon``'s and ``torch.optim.AdamW``'s op
for op, so the two groups equal those optimizers bit for bit on float32 parameters
(``tests/optim/test_muon.py``).

Why not ``torch.optim.Muon`` itself as a part of a :class:`~memopt.optim.chained.ChainedOptimizer`: its
state is not declared as a template (no ``template_bytes``, no checked ``load_state_dict``, no
``state_storage``), and on an FSDP2 shard it would orthogonalize the rank's rows alone, which is not the
orthogonalization of the matrix. Here a sharded parameter's momentum stays row-sharded, the update matrix
is gathered (one all-gather of ``m x n`` elements per step), every rank runs the same Newton-Schulz
iteration on the whole matrix and keeps its rows: the result equals one process's bit for bit.

State: ``momentum_buffer`` (Muon) or ``exp_avg`` and ``exp_avg_sq`` (AdamW), elementwise slots in any
``state_storage`` format, and ``step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, DEFAULT_NS_STEPS, EPS
from torch.optim._muon import _adjust_lr as muon_lr
from torch.optim._muon import _zeropower_via_newtonschulz as newton_schulz

from memopt.estimators.base import ParamStep
from memopt.optim.adam_parts import adam_template
from memopt.optim.base import STORAGE_OPTIONS, MemoptBase, param_name
from memopt.state.template import StateSlot, like_param, raw
from memopt.validation import check_betas, check_bool, check_choice, check_non_negative, check_positive_int

Params = Iterable[torch.Tensor] | Iterable[dict]
ADJUST_LR_FNS = ("original", "match_rms_adamw")


class Muon(MemoptBase):
    """Muon on groups with ``use_muon=True`` (2-D parameters), AdamW on the others (module docstring).

    Args:
        params: parameters or parameter groups; ``memopt.build_optimizer(model, "muon")`` puts the hidden
            ``nn.Linear`` weights in a Muon group and the embeddings, norms, biases and output head in an
            AdamW group, as the Muon recipe does.
        lr, weight_decay: shared by both kinds of group (decoupled decay ``W <- W (1 - lr wd)``).
        momentum, nesterov: Muon's momentum.
        ns_coefficients, ns_steps, ns_eps: the quintic Newton-Schulz iteration (torch's defaults).
        adjust_lr_fn: Muon's lr scaling by shape, ``"match_rms_adamw"`` or ``"original"``.
        betas, eps: AdamW's.
        use_muon: the default of the group option.
        state_storage, quant_block_size, stochastic_rounding: how the elementwise states are held.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (DEFAULT_A, DEFAULT_B, DEFAULT_C),
        ns_steps: int = DEFAULT_NS_STEPS,
        ns_eps: float = EPS,
        adjust_lr_fn: str = "match_rms_adamw",
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        use_muon: bool = True,
        state_storage: str = STORAGE_OPTIONS["state_storage"],
        quant_block_size: int = STORAGE_OPTIONS["quant_block_size"],
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
            ns_coefficients=tuple(ns_coefficients), ns_steps=ns_steps, ns_eps=ns_eps, adjust_lr_fn=adjust_lr_fn,
            betas=tuple(betas), eps=eps, use_muon=use_muon, state_storage=state_storage,
            quant_block_size=quant_block_size, stochastic_rounding=stochastic_rounding,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _complete_group(self, group: dict) -> None:
        for key in ("betas", "ns_coefficients"):
            if isinstance(group[key], list):
                group[key] = tuple(group[key])

    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        for key in ("lr", "weight_decay", "momentum", "eps", "ns_eps"):
            check_non_negative(key, group[key])
        check_betas(group["betas"])
        check_bool("nesterov", group["nesterov"])
        check_bool("use_muon", group["use_muon"])
        check_positive_int("ns_steps", group["ns_steps"])
        check_choice("adjust_lr_fn", group["adjust_lr_fn"], ADJUST_LR_FNS)
        if group["ns_steps"] >= 100:
            raise ValueError(f"Invalid ns_steps: {group['ns_steps']}. Newton-Schulz takes fewer than 100 steps.")
        if len(group["ns_coefficients"]) != 3:
            raise ValueError(f"Invalid ns_coefficients: {group['ns_coefficients']!r}; give three numbers (a, b, c).")
        if not group["use_muon"]:
            return
        for position, param in enumerate(group["params"]):
            if param.ndim != 2:
                raise ValueError(
                    f"{param_name(group, group_index, position, param)} has shape {tuple(param.shape)}, but Muon "
                    "orthogonalizes matrices (2-D). Put it in a group with use_muon=False (AdamW), or build the "
                    "optimizer with memopt.build_optimizer(model, 'muon'), which gives Muon the hidden matrices only."
                )

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        if group["use_muon"]:
            return {"step": raw(0), "momentum_buffer": like_param(param)}
        return adam_template(param)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step from the gradients in ``.grad`` (``closure``, if given, recomputes them first)."""
        return self._step_each(closure, _update)


def _update(ps: ParamStep, group: dict) -> None:
    """Muon's step on a ``use_muon`` group's parameter, AdamW's on the others."""
    (_muon_update if group["use_muon"] else _adamw_update)(ps, group)


def _muon_update(ps: ParamStep, group: dict) -> None:
    """``torch.optim.Muon``'s step on ``ps`` (the whole matrix orthogonalized when it is sharded)."""
    lr, mu = group["lr"], group["momentum"]
    grad = ps.grad
    buf = ps.load("momentum_buffer", grad.dtype)
    buf.lerp_(grad, 1 - mu)
    update = grad.lerp(buf, mu) if group["nesterov"] else buf
    ps.store("momentum_buffer", buf)
    ortho = newton_schulz(ps.shard.gather(update), group["ns_coefficients"], group["ns_steps"], group["ns_eps"])
    if ps.shard.sharded:
        ortho = ortho[ps.shard.start : ps.shard.stop]
    ps.work.mul_(1 - lr * group["weight_decay"])
    ps.work.add_(ortho, alpha=-muon_lr(lr, group["adjust_lr_fn"], torch.Size(ps.shape)))


def _adamw_update(ps: ParamStep, group: dict) -> None:
    """``torch.optim.AdamW``'s single-tensor step on ``ps``, op for op."""
    lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
    grad = ps.grad
    if wd != 0:
        ps.work.mul_(1 - lr * wd)
    exp_avg = ps.load("exp_avg", grad.dtype)
    exp_avg_sq = ps.load("exp_avg_sq", grad.dtype)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    ps.store("exp_avg", exp_avg)
    ps.store("exp_avg_sq", exp_avg_sq)
    step = float(ps.step)
    step_size = lr / (1 - beta1**step)
    denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(group["eps"])
    ps.work.addcdiv_(exp_avg, denom, value=-step_size)
