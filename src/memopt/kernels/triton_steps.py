"""The engine's Triton implementations (:mod:`memopt.optim.dispatch`): when they apply and how they launch
the kernels of :mod:`memopt.kernels.triton`.

* **8-bit AdamW** (Dettmers et al., "8-bit Optimizers via Block-wise Quantization", arXiv 2110.02861): one
  program per quantization block dequantizes both moments, updates them and the parameter
  (``m <- lerp(m, g, 1 - beta1)``, ``v <- beta2 v + (1 - beta2) g^2``,
  ``p <- decay p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``) and requantizes: the
  same update and codes as the engine's torch path (and the CPU kernel :mod:`memopt.kernels.adamw8bit`),
  for contiguous float32 CUDA parameters whose moments are 8-bit codes quantized on their own.
* **Subset-Norm** (Nguyen & Nguyen, "Lean and Mean Adaptive Optimization via Subset-Norm and
  Subspace-Momentum with Convergence Guarantees", ICML 2025, arXiv 2411.07120) with EMA momentum (Adam-,
  RMSProp- and AdaGrad-SN, :mod:`memopt.estimators.subset_norm`): one kernel updates the momentum and sums
  the squared gradient over each subset (rows in one pass per row tile; columns walking down the rows of a
  column tile), torch updates the small accumulators ``V`` and denominators ``D``, and a second kernel
  applies ``p <- p - step_size * m / D[subset]`` with the decoupled weight decay; for contiguous float32
  CUDA parameters with float32 state, not FSDP2-sharded (those keep the foreach path).
"""

from __future__ import annotations

import math

import torch

from memopt.estimators.base import MomentumEstimator, ParamStep, SecondMomentEstimator
from memopt.estimators.second_moment import accumulate, denominator
from memopt.estimators.subset_norm import subset_partition
from memopt.kernels import adamw8bit
from memopt.kernels import triton as kernel_set
from memopt.kernels.triton import blockwise
from memopt.state import sharding
from memopt.state.formats import QuantizedState

#: elements per program of the element-wise update, and of a tile of the subset-sum kernels
_ELEMENTS = 1024


def _float32_on_kernel_device(param: torch.Tensor, grad: torch.Tensor) -> bool:
    return (
        param.dtype == torch.float32
        and grad.dtype == torch.float32
        and param.is_contiguous()
        and kernel_set.applies(param, grad)
    )


# ----------------------------------------------------------------------------------------- 8-bit AdamW


def adamw8bit_eligible(param: torch.Tensor, grad: torch.Tensor, state: dict) -> bool:
    """A contiguous float32 parameter on a kernel device whose moments are 8-bit codes with one block size,
    quantized on their own (as :func:`memopt.kernels.adamw8bit.eligible` requires on the CPU)."""
    if not _float32_on_kernel_device(param, grad):
        return False
    moments = adamw8bit._moment_formats(state)
    if moments is None:
        return False
    return all(fmt.quantized_alone(state[key]) for fmt, key in zip(moments, ("exp_avg", "exp_avg_sq")))


def adamw8bit_step(steps: list[ParamStep], group: dict) -> None:
    """One AdamW step for ``steps`` (gradients already processed: maximize and coupled decay applied)."""
    beta1, beta2 = group["betas"]
    lr, wd = group["lr"], group["weight_decay"]
    decay = 1 - lr * wd if wd != 0 and group["decoupled_weight_decay"] else 1.0
    for ps in steps:
        if not kernel_set.has_data(ps.param):
            continue  # a fake tensor: the kernel allocates nothing, so there is nothing to count
        m_format, v_format = adamw8bit._moment_formats(ps.state)
        m, v = ps.state["exp_avg"], ps.state["exp_avg_sq"]
        n, block = ps.param.numel(), m_format.block_size
        device = ps.param.device
        signed_map, signed_table, signed_mid = blockwise.tables(True, device)
        unsigned_map, unsigned_table, unsigned_mid = blockwise.tables(False, device)
        kernel_set.kernels().adamw8bit_kernel[(-(-n // block),)](
            ps.param, ps.grad.contiguous(),
            sharding.local(m.codes), m_format.maxima(m), sharding.local(v.codes), v_format.maxima(v), n, block,
            signed_map, unsigned_map, signed_table, signed_mid, unsigned_table, unsigned_mid,
            1 - beta1, beta2, 1 - beta2, group["eps"], decay,
            -lr / (1 - beta1**ps.step), math.sqrt(1 - beta2**ps.step),
            BLOCK=blockwise.block_lanes(block), **blockwise.table_constants(), **kernel_set.LAUNCH,
        )  # fmt: skip


# ----------------------------------------------------------------------------------------- Subset-Norm


def subset_norm_applies(group: dict, momentum: MomentumEstimator, second: SecondMomentEstimator) -> bool:
    """Subset-Norm second moments with EMA momentum (or none: ``beta1 = 0``)."""
    return momentum.name == "ema" and second.name == "subset_norm"


def subset_norm_eligible(param: torch.Tensor, grad: torch.Tensor, state: dict) -> bool:
    """A contiguous float32 parameter on a kernel device with plain float32 state, not an FSDP2 shard (the
    engine hands a DTensor parameter's state as a :class:`~memopt.state.sharding.LocalState`)."""
    if isinstance(state, sharding.LocalState) or not _float32_on_kernel_device(param, grad):
        return False
    return all(
        not isinstance(value, QuantizedState) and (not torch.is_tensor(value) or value.dtype == torch.float32)
        for key, value in state.items()
        if key in ("exp_avg", "subset_sq")
    )


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def subset_norm_step(steps: list[ParamStep], group: dict, step_sizes: list[float]) -> None:
    """One Subset-Norm step for ``steps``, ``step_sizes`` their ``lr_t / (1 - beta1^t)``."""
    beta1, beta2 = group["betas"]
    lr, wd = group["lr"], group["weight_decay"]
    decay = 1 - lr * wd if wd != 0 and group["decoupled_weight_decay"] else 1.0
    decay_after = group["weight_decay_placement"] != "before_update"
    source = kernel_set.kernels() if steps else None
    for ps, step_size in zip(steps, step_sizes):
        acc = ps.state["subset_sq"]
        (rows, cols), reduce_dim = subset_partition(tuple(ps.shape), group["subset_size"])
        per_row = reduce_dim == 1
        if not kernel_set.has_data(ps.param):
            continue
        grad = ps.grad.contiguous()
        momentum = ps.state["exp_avg"] if beta1 > 0 else grad
        stat = torch.empty(rows if per_row else cols, dtype=torch.float32, device=grad.device)
        if per_row:
            tile_cols = min(_pow2(cols), _ELEMENTS)
            tile_rows = min(_ELEMENTS // tile_cols, _pow2(rows))
            grid, kernel = -(-rows // tile_rows), source.subset_rows_kernel
        else:
            tile_cols = min(_pow2(cols), 32)
            tile_rows = min(_ELEMENTS // tile_cols, _pow2(rows))
            grid, kernel = -(-cols // tile_cols), source.subset_cols_kernel
        kernel[(grid,)](
            grad, momentum, stat, rows, cols, 1 - beta1,
            HAS_MOMENTUM=beta1 > 0, ROWS=tile_rows, COLS=tile_cols, **kernel_set.LAUNCH,
        )  # fmt: skip
        accumulate(acc, stat.view(acc.shape), beta2)
        denom = denominator(acc, group, ps.step).reshape(-1).contiguous()
        n = ps.param.numel()
        source.subset_apply_kernel[(-(-n // _ELEMENTS),)](
            ps.param, momentum, denom, n, cols, decay, -step_size,
            PER_ROW=per_row, DECAY_AFTER=decay_after, BLOCK=_ELEMENTS, **kernel_set.LAUNCH,
        )  # fmt: skip
