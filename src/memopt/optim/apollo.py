"""APOLLO and APOLLO-Mini: SGD with learning rates scaled per channel (or per tensor) by AdamW moments kept in a
random projection.

Zhu, Zhang, Cong, Liu, Park, Chandra, Long, Pan, Wang & Lee, "APOLLO: SGD-like Memory, AdamW-level
Performance", MLSys 2025 (arXiv 2412.05270), Algorithm 1. For a matrix ``G`` (``m x n``) in a group with
``rank`` set, with a Gaussian projection ``P`` (``r x short``, entries ``N(0, 1/r)``, redrawn every
``update_proj_gap`` steps from a seed, never stored)::

    R_t = G_t P^T (tall, m x r) or P G_t (wide, r x n)
    M_t, V_t = AdamW moments of R_t (HF-style, as GaLore)      ~R_t = M_t / (sqrt(V_t) + eps)
    s_t = ||~R_t[c]|| / (||R_t[c]|| + 1e-8)                    per channel c (a row of a tall G, a column of a
                                                                wide G: ``scale_type="channel"``, APOLLO), or
                                                                one ratio for the tensor (``"tensor"``, APOLLO-Mini)
    U_t = G_t * s_t                                             (the raw gradient, scaled)
    U_t <- U_t / max(1, ||U_t|| / (1.01 ||U_{t-1}||))           (norm-growth limiter, ``norm_growth_limit``)
    W_t = W_{t-1} - lr sqrt(1 - beta2^t) / (1 - beta1^t) * sqrt(scale) * U_t;  W_t <- W_t (1 - lr wd)

``scale`` is the authors' package's (``apollo-torch``): the update is multiplied by ``sqrt(scale)``, so the
paper's APOLLO-Mini factor ``alpha = sqrt(128)`` is ``scale=128``. Groups without ``rank`` take the same AdamW
step without projection. The arithmetic is ``apollo-torch``'s ``APOLLOAdamW`` op for op; its projection comes
from its own seed sequence (``tests/optim/test_apollo.py`` gives it memopt's matrices and compares). Here the
projection of parameter ``i`` drawn at step ``t`` comes from a generator seeded by ``(proj_seed, i, t)``, so
only the step of the last redraw is state (the paper's point: the projection costs no memory), and a resumed
run draws the same. Rebuild schedule: ``proj_schedule`` as GaLore's
(:func:`memopt.optim.adam_parts.rebuilds_projector`).

On FSDP2 shards: every rank draws the same whole ``P``; a tall matrix's projection, moments and channel
norms stay in its rows, a wide one's projection is all-reduced (``r x n``, replicated moments); whole-tensor
norms are all-reduced.

State: ``exp_avg``, ``exp_avg_sq`` (the projection's shape; elementwise), ``proj_drawn`` (the step of the
last redraw), ``last_norm`` (``||U_{t-1}||``, with the limiter) and ``step``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable

import torch

from memopt.estimators.base import ParamStep
from memopt.estimators.subspace_momentum import projector_seed
from memopt.optim.adam_parts import (
    ProjectedAdamBase,
    adam_template,
    hf_adam_apply,
    hf_adam_direction,
    rebuilds_projector,
)
from memopt.optim.base import STORAGE_OPTIONS
from memopt.state import sharding
from memopt.state.sharding import ShardSpec
from memopt.state.template import StateSlot, raw
from memopt.validation import check_choice

Params = Iterable[torch.Tensor] | Iterable[dict]
SCALE_TYPES = ("channel", "tensor")
#: the ``1e-8`` that keeps the channel ratio finite, as in the paper's code
RATIO_EPS = 1e-8


def gaussian_projection(shape: tuple[int, int], rank: int, seed: int, device: torch.device | str) -> torch.Tensor:
    """The ``rank x short`` projection of a matrix of ``shape``: ``N(0, 1) / sqrt(rank)`` entries from a
    generator seeded with ``seed`` (the same on every rank and after a resume)."""
    device = torch.device(device)
    if device.type == "meta":  # a memory plan on the meta device: the shape alone (no generator there)
        return torch.empty((rank, min(shape)), device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    draw = torch.randn((rank, min(shape)), generator=generator, device=device, dtype=torch.float32)
    return draw / math.sqrt(rank)


def _effective_rank(shape: tuple[int, ...], group: dict) -> int:
    return min(group["rank"], min(shape))


class Apollo(ProjectedAdamBase):
    """APOLLO (``scale_type="channel"``) and APOLLO-Mini (``"tensor"``, rank 1); module docstring.

    Args:
        params: parameters or groups; ``memopt.build_optimizer(model, "apollo")`` gives the hidden
            ``nn.Linear`` weights ``rank`` and every other parameter ``rank=None`` (AdamW).
        lr, betas, eps, weight_decay, correct_bias: AdamW's (HF-style step size, decay after the update).
        rank, scale_type, scale: the projection's rank, the scaling's granularity, the update's factor
            ``sqrt(scale)``.
        update_proj_gap, proj_schedule, proj_seed: when the projection is redrawn, and from what seed.
        norm_growth_limit: the limiter's ``gamma`` (``None``: no limiter).
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
        rank: int | None = 256,
        scale_type: str = "channel",
        scale: float = 1.0,
        update_proj_gap: int = 200,
        proj_schedule: str = "memopt",
        proj_seed: int = 0,
        norm_growth_limit: float | None = 1.01,
        state_storage: str = STORAGE_OPTIONS["state_storage"],
        quant_block_size: int = STORAGE_OPTIONS["quant_block_size"],
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, correct_bias=correct_bias, rank=rank,
            scale_type=scale_type, scale=scale, update_proj_gap=update_proj_gap, proj_schedule=proj_schedule,
            proj_seed=proj_seed, norm_growth_limit=norm_growth_limit, state_storage=state_storage,
            quant_block_size=quant_block_size, stochastic_rounding=stochastic_rounding,
        )  # fmt: skip
        super().__init__(params, defaults)

    method, registry_name = "APOLLO", "apollo"

    @staticmethod
    def update(ps: ParamStep, group: dict) -> None:
        """One APOLLO step of ``ps``."""
        _apollo_update(ps, group)

    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        if group["rank"] is None:
            return
        check_choice("scale_type", group["scale_type"], SCALE_TYPES)
        limit = group["norm_growth_limit"]
        if limit is not None and not (isinstance(limit, (int, float)) and limit >= 1):
            raise ValueError(f"Invalid norm_growth_limit: {limit!r}. Give a number >= 1 (1.01), or None for none.")

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        if group["rank"] is None:
            return adam_template(param)
        shape = tuple(param.shape)
        tall = shape[0] >= shape[1]
        rank = _effective_rank(shape, group)
        projected = (shape[0], rank) if tall else (rank, shape[1])
        template = {
            "step": raw(0),
            "exp_avg": StateSlot("elementwise", projected, sharded=tall, default="param"),
            "exp_avg_sq": StateSlot("elementwise", projected, sharded=tall, default="param", non_negative=True),
            "proj_drawn": raw(0),
        }
        if group["norm_growth_limit"] is not None:
            template["last_norm"] = StateSlot("reduced", (), sharded=False)
        return template


def _norm(x: torch.Tensor, spec: ShardSpec, *, replicated: bool) -> torch.Tensor:
    """``||x||`` of the whole tensor (``x``: this rank's rows, or the whole of it if ``replicated``)."""
    return torch.norm(x) if replicated or not spec.sharded else sharding.sum_of_squares(x, spec).sqrt()


def _apollo_update(ps: ParamStep, group: dict) -> None:
    """One APOLLO step of ``ps`` (plain AdamW when the group has no ``rank``)."""
    projected = group["rank"] is not None
    grad, spec = ps.grad, ps.shard
    tall = projected and spec.shape[0] >= spec.shape[1]
    if projected:
        if rebuilds_projector(ps.step, group["update_proj_gap"], group["proj_schedule"]):
            ps.state["proj_drawn"] = ps.step
        seed = projector_seed(group["proj_seed"], ps.index, ps.state["proj_drawn"])
        proj = gaussian_projection(spec.shape, _effective_rank(spec.shape, group), seed, grad.device).to(grad.dtype)
        if tall:
            grad = grad @ proj.T
        else:
            grad = spec.all_reduce(proj[:, spec.start : spec.stop] @ grad)
    update, step_size = hf_adam_direction(ps, group, grad)
    if projected:
        update = _scaled_gradient(ps, group, update, grad, tall)
    hf_adam_apply(ps, group, update, step_size)


def _scaled_gradient(
    ps: ParamStep, group: dict, normalized: torch.Tensor, projected: torch.Tensor, tall: bool
) -> torch.Tensor:
    """The raw gradient scaled by the ratio of the normalized to the projected gradient, limited and times
    ``sqrt(scale)``."""
    spec = ps.shard
    if group["scale_type"] == "channel":
        dim = 1 if tall else 0  # rows of a tall matrix, columns of a wide one
        ratio = torch.norm(normalized, dim=dim) / (torch.norm(projected, dim=dim) + RATIO_EPS)
        if tall:
            ratio = ratio.unsqueeze(1)
    else:
        ratio = _norm(normalized, spec, replicated=not tall) / (_norm(projected, spec, replicated=not tall) + RATIO_EPS)
    scaled = ps.grad * ratio
    limit = group["norm_growth_limit"]
    if limit is not None:
        norm = _norm(scaled, spec, replicated=False)
        last = ps.load("last_norm", norm.dtype)
        if ps.step > 1:
            limiter = max(norm / (last + RATIO_EPS), limit) / limit
            scaled = scaled / limiter
            norm = norm / limiter
        ps.store("last_norm", last.copy_(norm))
    return scaled * math.sqrt(group["scale"])


class ApolloMini(Apollo):
    """APOLLO-Mini: :class:`Apollo` with ``rank=1``, ``scale_type="tensor"`` and ``scale=128`` (the paper's
    ``alpha = sqrt(128)``) by default; every argument of :class:`Apollo` is accepted."""

    def __init__(self, params: Params, **kwargs) -> None:
        super().__init__(params, **{"rank": 1, "scale_type": "tensor", "scale": 128.0, **kwargs})


# the same arguments as Apollo's (build_optimizer validates hyperparameters against the signature), with
# APOLLO-Mini's defaults
ApolloMini.__init__.__signature__ = inspect.signature(Apollo.__init__).replace(
    parameters=[
        p.replace(default={"rank": 1, "scale_type": "tensor", "scale": 128.0}.get(p.name, p.default))
        for p in inspect.signature(Apollo.__init__).parameters.values()
    ]
)
