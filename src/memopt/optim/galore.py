"""GaLore-AdamW: Adam's moments kept in a low-rank projection of each matrix gradient.

Zhao, Zhang, Chen, Wang, Anandkumar & Tian, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
Projection", ICML 2024 (arXiv 2403.03507), Algorithm 2. For a matrix in a group with ``rank`` set, with the
projector ``P`` of :mod:`memopt.estimators.projectors` (``svd``: the top-``r`` singular vectors of the
gradient on its shorter side, rebuilt every ``update_proj_gap`` steps)::

    R_t = P(G_t)                                        (m x r for a tall matrix, r x n for a wide one)
    M_t = beta1 M_{t-1} + (1 - beta1) R_t               (both moments in the projection, kept across rebuilds)
    V_t = beta2 V_{t-1} + (1 - beta2) R_t^2
    N_t = scale * P*(M_t / (sqrt(V_t) + eps))
    W_t = W_{t-1} - lr sqrt(1 - beta2^t) / (1 - beta1^t) * N_t     (``correct_bias``: the HF-style step size)
    W_t <- W_t (1 - lr wd)                              (decoupled decay after the update, as the reference)

Groups without ``rank`` (``rank=None``: embeddings, norms, biases, the output head) take the same AdamW step
without projection. This is the arithmetic of the authors' ``galore-torch`` ``GaLoreAdamW`` op for op
(``tests/optim/test_galore.py`` compares them).

Projector schedule (``proj_schedule``): ``"memopt"`` (the default) rebuilds at steps ``1, T, 2T, ...`` as
Subspace-Momentum does (:mod:`memopt.estimators.subspace_momentum`), so GaLore and SNSM with one gap refresh
together; ``"galore"`` rebuilds at ``1, 1 + T, 1 + 2T, ...`` as ``galore-torch`` does (it tests its step
counter before incrementing it).

On FSDP2 shards the projector is built from the gathered gradient and broadcast, and the moments are
row-sharded for tall matrices and replicated for wide ones, as Subspace-Momentum's
(:mod:`memopt.estimators.projectors` gives the communication per layout).

State: ``exp_avg`` and ``exp_avg_sq`` (the projection's shape in a rank group, elementwise: any
``state_storage``), the projector (``sm_layout``, ``sm_basis`` or ``sm_indices``) and ``step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from memopt.estimators import projectors
from memopt.estimators.base import ParamStep
from memopt.estimators.subspace_momentum import build_projector, projected_slot, projector_template
from memopt.optim.base import STORAGE_OPTIONS, MemoptBase, param_name
from memopt.state.template import StateSlot, like_param, raw
from memopt.validation import check_betas, check_bool, check_choice, check_non_negative, check_positive_int

Params = Iterable[torch.Tensor] | Iterable[dict]
PROJ_SCHEDULES = ("memopt", "galore")


def rebuilds_projector(step: int, gap: int, schedule: str) -> bool:
    """Whether the projector is (re)built at ``step`` (counted from 1) under ``schedule``."""
    if schedule == "galore":
        return (step - 1) % gap == 0
    return step == 1 or step % gap == 0


class GaLoreAdamW(MemoptBase):
    """GaLore-AdamW (module docstring): projected moments on groups with ``rank``, AdamW on the others.

    Args:
        params: parameters or groups; ``memopt.build_optimizer(model, "galore")`` gives the hidden
            ``nn.Linear`` weights ``rank`` and every other parameter ``rank=None``.
        lr, betas, eps, weight_decay, correct_bias: AdamW's (HF-style bias correction of the step size).
        rank: the projection's rank (``None``: plain AdamW); clamped to what the projector allows.
        update_proj_gap: steps between projector rebuilds; proj_schedule: ``"memopt"`` or ``"galore"``.
        scale: GaLore's ``alpha``, the factor of the projected-back update.
        proj_type: ``"svd"`` (GaLore's), ``"randomized"``, ``"topk"`` or ``"uniform"``; proj_seed: the seed
            of random projectors.
        state_storage, quant_block_size, stochastic_rounding: how the moments are held.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
        rank: int | None = 128,
        update_proj_gap: int = 200,
        scale: float = 0.25,
        proj_type: str = "svd",
        proj_seed: int = 0,
        proj_schedule: str = "memopt",
        state_storage: str = STORAGE_OPTIONS["state_storage"],
        quant_block_size: int = STORAGE_OPTIONS["quant_block_size"],
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, correct_bias=correct_bias, rank=rank,
            update_proj_gap=update_proj_gap, scale=scale, proj_type=proj_type, proj_seed=proj_seed,
            proj_schedule=proj_schedule, state_storage=state_storage, quant_block_size=quant_block_size,
            stochastic_rounding=stochastic_rounding,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _complete_group(self, group: dict) -> None:
        if isinstance(group["betas"], list):
            group["betas"] = tuple(group["betas"])

    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        for key in ("lr", "eps", "weight_decay", "scale"):
            check_non_negative(key, group[key])
        check_betas(group["betas"])
        check_bool("correct_bias", group["correct_bias"])
        if group["rank"] is None:
            return
        check_positive_int("rank", group["rank"])
        check_positive_int("update_proj_gap", group["update_proj_gap"])
        check_choice("proj_type", group["proj_type"], projectors.PROJ_TYPES)
        check_choice("proj_schedule", group["proj_schedule"], PROJ_SCHEDULES)
        if not isinstance(group["proj_seed"], int):
            raise ValueError(f"Invalid proj_seed: {group['proj_seed']!r}. proj_seed must be an integer.")
        for position, param in enumerate(group["params"]):
            if param.ndim != 2:
                raise ValueError(
                    f"{param_name(group, group_index, position, param)} has shape {tuple(param.shape)}, but GaLore "
                    "projects matrices (2-D). Put it in a group with rank=None (AdamW), or build the optimizer "
                    "with memopt.build_optimizer(model, 'galore'), which projects the hidden matrices only."
                )

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        if group["rank"] is None:
            return {"step": raw(0), "exp_avg": like_param(param), "exp_avg_sq": like_param(param, non_negative=True)}
        return {
            "step": raw(0),
            "exp_avg": projected_slot(param, group),
            "exp_avg_sq": projected_slot(param, group, non_negative=True),
            **projector_template(param, group),
        }

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step from the gradients in ``.grad`` (``closure``, if given, recomputes them first)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group_index, group in enumerate(self.param_groups):
            for index, param, name in self._params_with_grad(group, group_index):
                ps = self._begin(param, group, index, name)
                _galore_update(ps, group)
                ps.write_back()
        return loss


def _galore_update(ps: ParamStep, group: dict) -> None:
    """One GaLore-AdamW step of ``ps`` (plain AdamW when the group has no ``rank``)."""
    lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
    projected = group["rank"] is not None
    grad = ps.grad
    if projected:
        if rebuilds_projector(ps.step, group["update_proj_gap"], group["proj_schedule"]):
            build_projector(ps, group)
        grad = projectors.down(grad, ps.state, ps.shard)
    exp_avg = ps.load("exp_avg", grad.dtype)
    exp_avg_sq = ps.load("exp_avg_sq", grad.dtype)
    exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    ps.store("exp_avg", exp_avg)
    ps.store("exp_avg_sq", exp_avg_sq)
    denom = exp_avg_sq.sqrt().add_(group["eps"])
    step_size = lr
    if group["correct_bias"]:
        step_size = lr * math.sqrt(1.0 - beta2**ps.step) / (1.0 - beta1**ps.step)
    update = exp_avg / denom
    if projected:
        update = projectors.up(update, ps.state, tuple(ps.work.shape), ps.shard) * group["scale"]
    ps.work.add_(update, alpha=-step_size)
    if wd > 0.0:
        ps.work.add_(ps.work, alpha=-lr * wd)
