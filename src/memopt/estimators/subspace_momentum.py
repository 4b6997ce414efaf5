"""Subspace-Momentum (SM): momentum kept only inside a low-dimensional subspace of a matrix gradient.

Nguyen & Nguyen, "Lean and Mean Adaptive Optimization via Subset-Norm and Subspace-Momentum with
Convergence Guarantees", ICML 2025 (arXiv 2411.07120). With a projector ``P`` (see :mod:`.projectors`)::

    M_t = beta1 M_{t-1} + (1 - beta1) P(g_t)              momentum in the subspace (r-dimensional)
    N_t = P*(M_t) + (g_t - P*(P(g_t)))                    plus plain SGD in the orthogonal complement
        = g_t + P*(M_t - P(g_t))                           (the form computed: one back-projection)

The projector is built from the gradient at the first step and rebuilt on the ``proj_schedule``:

* ``"sn-sm"`` (default, the Subset-Norm/Subspace-Momentum authors' code): whenever ``t % update_proj_gap == 0``
  (steps 1, 5, 10, ... at gap 5);
* ``"galore"`` (GaLore's projector, Zhao et al. 2024, arXiv 2403.03507, whose counter starts at 0): whenever
  ``(t - 1) % update_proj_gap == 0`` (steps 1, 6, 11, ...).

What happens to ``M`` at a rebuild is the explicit ``proj_policy``:

* ``"reset"``: ``M`` is zeroed before this step's EMA, so ``M_t = (1 - beta1) P_new(g_t)``;
* ``"keep"``: ``M``'s coordinates are kept as they are and read in the new subspace (the source code's
  ``overlap_state``);
* ``"transform"``: ``M`` is carried into the new subspace (:func:`.projectors.carry`).

Bias correction ``1 - beta1^t`` uses the parameter's global step, not the steps since the rebuild.

On a parameter sharded on dim 0 (FSDP2) the projector is computed from the **full** gradient: it is
gathered at each rebuild (one all-gather of the ``m x n`` gradient every ``update_proj_gap`` steps) and
the basis computed once and broadcast, so every rank holds the same, replicated projector (see
:mod:`.projectors` for the per-layout communication). The momentum is row-sharded when its rows are the
parameter's (tall matrices with a basis, wide ones with selected columns) and replicated otherwise.
Hyperparameters: ``rank`` (``None``: plain EMA momentum for the group), ``update_proj_gap``, ``proj_schedule``,
``proj_type`` (``"svd"``, ``"randomized"``, ``"topk"``, ``"uniform"``), ``proj_policy``, ``proj_seed`` (random
projectors draw from a generator seeded by it, the parameter's position in the optimizer and the step),
``proj_matmul_dtype``.

``proj_matmul_dtype`` (default ``None``: the two projections multiply in the gradient's compute dtype, float32
for float32 parameters): ``"bfloat16"`` rounds the operands of both projections ``G Q^T`` and ``M Q`` (or
``Q G`` and ``Q^T M``) to bfloat16 and accumulates in float32 (:func:`.projectors.matmul`), where a device
multiplies bfloat16 faster (GPU tensor cores, CPUs with AMX or AVX512-BF16); the numerator then differs from
the float32 one by about bfloat16's precision relative to ``P*(M_t - P(g))`` (tests: within 1% in norm). On
CPUs without bfloat16 instructions it is slower (see docs/benchmarks.md). Selection projectors (``topk``,
``uniform``) do not multiply, so it does not apply to them.

Cost of a regular step (basis projectors, ``m x n`` matrix, rank ``r``): two products of ``2 m n r`` flops,
``P(g)`` computed once and used for both the momentum and the orthogonal-complement term; ``M_t - P(g)``
overwrites ``P(g)``'s buffer, which the fast path shares between the matrices of one projected shape; the
back-projection is written into the numerator and ``g`` added in place (:func:`.projectors.add_up`), so the
only ``m x n`` tensor a step allocates is the numerator, bit for bit ``g + P*(M_t - P(g))``.
"""

from __future__ import annotations

import torch

from memopt.estimators import projectors
from memopt.estimators.base import MomentumEstimator, ParamStep
from memopt.estimators.momentum import ema_bias_correction
from memopt.estimators.registry import register_estimator
from memopt.state.template import StateSlot, raw
from memopt.validation import check_choice, check_positive_int, name_list

PROJ_POLICIES = ("reset", "keep", "transform")
PROJ_SCHEDULES = ("sn-sm", "galore")
#: ``proj_matmul_dtype`` -> the dtype the projections multiply in (None: the gradient's compute dtype)
MATMUL_DTYPES: dict[str | None, torch.dtype | None] = {None: None, "bfloat16": torch.bfloat16}


def rebuilds_at(step: int, group: dict) -> bool:
    """Whether the projector is (re)built at ``step`` (1-based) under the group's ``proj_schedule``."""
    gap = group["update_proj_gap"]
    if group["proj_schedule"] == "galore":
        return (step - 1) % gap == 0
    return step == 1 or step % gap == 0


def effective_rank(shape: tuple[int, ...], group: dict) -> int:
    """``rank`` clamped to what the projector allows for a matrix of ``shape``."""
    return min(group["rank"], projectors.max_rank(shape, group["proj_type"]))


def projected_slot(param: torch.Tensor, group: dict, **options) -> StateSlot:
    """An elementwise slot of the shape of ``P(G)`` for ``param`` (``options``: e.g. ``non_negative``), kept
    in the parameter's dtype by default; its rows are the parameter's (row-sharded) for the ``right``
    (``m x r``) and ``cols`` (``m x r``) layouts, replicated otherwise."""
    shape = tuple(param.shape)
    layout = projectors.layout_for(shape, group["proj_type"])
    projected = projectors.projected_shape(shape, effective_rank(shape, group), layout)
    return StateSlot("elementwise", projected, sharded=layout in ("right", "cols"), default="param", **options)


def projector_template(param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
    """The projector's slots for ``param``: ``sm_layout`` (raw) and ``sm_basis`` or ``sm_indices`` (fixed,
    replicated), which :func:`.projectors.build` replaces whole."""
    shape = tuple(param.shape)
    rank = effective_rank(shape, group)
    template = {"sm_layout": raw(projectors.layout_for(shape, group["proj_type"]))}
    if group["proj_type"] in projectors.BASIS_TYPES:
        template["sm_basis"] = StateSlot("fixed", (rank, min(shape)), dtype="param", sharded=False)
    else:
        template["sm_indices"] = StateSlot("fixed", (rank,), dtype=torch.int64, sharded=False)
    return template


def build_projector(ps: ParamStep, group: dict) -> None:
    """(Re)build ``ps``'s projector from its gradient (random projectors: a generator seeded by
    ``proj_seed``, the parameter's position and the step)."""
    generator = None
    if group["proj_type"] in projectors.RANDOM_TYPES:
        generator = torch.Generator(device=ps.grad.device)
        generator.manual_seed(projector_seed(group["proj_seed"], ps.index, ps.step))
    projectors.build(ps.grad, group["proj_type"], effective_rank(ps.shape, group), ps.state, generator,
                     ps.param.dtype, ps.shard)  # fmt: skip


def projector_seed(proj_seed: int, index: int, step: int) -> int:
    """The seed of the generator that a random projector of parameter ``index`` uses at ``step``."""
    return ((proj_seed * 1_000_003 + index) * 1_000_033 + step) % (2**63 - 1)


@register_estimator("subspace")
class SubspaceMomentum(MomentumEstimator):
    """Subspace-Momentum numerator for 2-D parameters (see the module docstring)."""

    hyperparameters = {
        "rank": 128,
        "update_proj_gap": 200,
        "proj_type": "svd",
        "proj_policy": "reset",
        "proj_seed": 0,
        "proj_schedule": "sn-sm",
        "proj_matmul_dtype": None,
    }

    def validate_group(self, group: dict) -> None:
        check_positive_int("rank", group["rank"])
        check_positive_int("update_proj_gap", group["update_proj_gap"])
        check_choice("proj_type", group["proj_type"], projectors.PROJ_TYPES)
        check_choice("proj_policy", group["proj_policy"], PROJ_POLICIES)
        check_choice("proj_schedule", group["proj_schedule"], PROJ_SCHEDULES)
        if group["proj_matmul_dtype"] not in MATMUL_DTYPES:
            raise ValueError(
                f"Invalid proj_matmul_dtype: {group['proj_matmul_dtype']!r}. Choose None (multiply in the "
                "gradient's dtype) or 'bfloat16' (bfloat16 operands, float32 accumulation)."
            )
        if not isinstance(group["proj_seed"], int):
            raise ValueError(f"Invalid proj_seed: {group['proj_seed']!r}. proj_seed must be an integer.")

    def check_param(self, param: torch.Tensor, group: dict, name: str) -> str | None:
        if param.ndim != 2:
            raise ValueError(
                f"{name} has shape {tuple(param.shape)}, but Subspace-Momentum projects matrices (2-D). "
                "Put it in a parameter group with rank=None (plain EMA momentum), or build the optimizer "
                "with memopt.build_optimizer, which gives Subspace-Momentum only to nn.Linear weights."
            )
        limit = projectors.max_rank(tuple(param.shape), group["proj_type"])
        return f"{name} clamped to {limit}" if group["rank"] > limit else None

    def adjustment_warning(self, group: dict, notes: list[str]) -> str:
        return (
            f"rank={group['rank']} exceeds what proj_type={group['proj_type']!r} allows for {len(notes)} "
            f"matri{'x' if len(notes) == 1 else 'ces'}: {name_list(notes)}."
        )

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """The projected momentum (elementwise: any storage format) and the projector. The projector is
        irregular: :func:`.projectors.build` replaces it whole from the first gradient and at every rebuild,
        so it is declared as ``"fixed"`` tensors (the basis in the parameter's dtype, or int64 indices; never
        quantized, replicated on shards) and its layout as a raw string, all present from the start so that
        the state lists every entry a checkpoint holds."""
        return {"sm_exp_avg": projected_slot(param, group), **projector_template(param, group)}

    def _refresh(self, ps: ParamStep, group: dict, momentum: torch.Tensor) -> None:
        state = ps.state
        had_projector = ps.step > 1
        old = {k: state[k] for k in ("sm_layout", "sm_basis", "sm_indices") if k in state}
        build_projector(ps, group)
        if not had_projector:
            return
        policy = group["proj_policy"]
        if policy == "reset":
            momentum.zero_()
        elif policy == "transform":
            momentum.copy_(projectors.carry(momentum, old, state))

    def numerator(self, ps: ParamStep, group: dict) -> torch.Tensor:
        return self._numerator(ps, group, None)

    def numerator_many(self, steps: list[ParamStep], group: dict) -> list[torch.Tensor]:
        """The numerators of a group, with one ``P(g)`` buffer per projected shape shared by its matrices."""
        workspace: dict[tuple, torch.Tensor] = {}
        return [self._numerator(ps, group, workspace) for ps in steps]

    def _numerator(self, ps: ParamStep, group: dict, workspace: dict[tuple, torch.Tensor] | None) -> torch.Tensor:
        """``g + P*(M_t - P(g))`` with ``P(g)`` computed once (into a ``workspace`` buffer when given, keyed by
        shape, dtype and device) and no ``m x n`` temporary besides the numerator itself."""
        g = ps.grad
        momentum = ps.load("sm_exp_avg", g.dtype)
        if rebuilds_at(ps.step, group):
            self._refresh(ps, group, momentum)
        matmul_dtype = MATMUL_DTYPES[group["proj_matmul_dtype"]]
        buffer = None
        if workspace is not None:
            key = (tuple(momentum.shape), g.dtype, g.device)
            buffer = workspace.get(key)
            if buffer is None:
                buffer = workspace[key] = torch.empty(momentum.shape, dtype=g.dtype, device=g.device)
        projected = projectors.down(g, ps.state, ps.shard, out=buffer, matmul_dtype=matmul_dtype)
        momentum.lerp_(projected, 1 - group["betas"][0])
        ps.store("sm_exp_avg", momentum)
        residual = torch.sub(momentum, projected, out=projected)  # M_t - P(g), over P(g)'s buffer
        return projectors.add_up(g, residual, ps.state, ps.shard, matmul_dtype=matmul_dtype)

    def bias_correction(self, group: dict, step: int) -> float:
        return ema_bias_correction(group, step)
