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

from collections.abc import Iterable

import torch

from memopt.estimators import projectors
from memopt.estimators.base import ParamStep
from memopt.estimators.subspace_momentum import build_projector, projected_slot, projector_template
from memopt.optim.adam_parts import (
    ProjectedAdamBase,
    adam_template,
    hf_adam_apply,
    hf_adam_direction,
    rebuilds_projector,
)
from memopt.optim.base import STORAGE_OPTIONS
from memopt.state.template import StateSlot, raw

Params = Iterable[torch.Tensor] | Iterable[dict]
class GaLoreAdamW(ProjectedAdamBase):
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

    method, registry_name = "GaLore", "galore"

    @staticmethod
    def update(ps: ParamStep, group: dict) -> None:
        """One GaLore-AdamW step of ``ps``."""
        _galore_update(ps, group)

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        if group["rank"] is None:
            return adam_template(param)
        return {
            "step": raw(0),
            "exp_avg": projected_slot(param, group),
            "exp_avg_sq": projected_slot(param, group, non_negative=True),
            **projector_template(param, group),
        }


def _galore_update(ps: ParamStep, group: dict) -> None:
    """One GaLore-AdamW step of ``ps`` (plain AdamW when the group has no ``rank``)."""
    projected = group["rank"] is not None
    grad = ps.grad
    if projected:
        if rebuilds_projector(ps.step, group["update_proj_gap"], group["proj_schedule"]):
            build_projector(ps, group)
        grad = projectors.down(grad, ps.state, ps.shard)
    update, step_size = hf_adam_direction(ps, group, grad)
    if projected:
        update = projectors.up(update, ps.state, tuple(ps.work.shape), ps.shard) * group["scale"]
    hf_adam_apply(ps, group, update, step_size)
