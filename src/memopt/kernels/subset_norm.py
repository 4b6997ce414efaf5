"""The one-pass CPU kernel for Subset-Norm steps (``subset_norm.c``), and when it applies.

Adam-SN, RMSProp-SN and AdaGrad-SN (Nguyen & Nguyen, "Lean and Mean Adaptive Optimization via Subset-Norm
and Subspace-Momentum with Convergence Guarantees", ICML 2025, arXiv 2411.07120): with ``N`` the EMA
momentum ``m <- m + (1 - beta1)(g - m)`` (or ``g`` when ``beta1 = 0`` or there is no momentum), one
accumulator per subset ``v_i <- beta2 v_i + (1 - beta2) sum_{j in i} g_j^2`` (``v_i + sum`` when
``beta2 = 1``) and ``theta_j <- theta_j - lr_t N_j / (sqrt(v_i) / sqrt(1 - beta2^t) + eps)``, with decoupled
weight decay before or after the update.

The engine's foreach path runs this in three passes (momentum, sums of squares, update); the kernel moves
each row through memory once (rows: read ``p, g, m``, write ``p, m``), or twice for column subsets (column
sums of ``g^2`` first). With the momentum stored in 8 bits it reads and writes the codes block by block
(``g`` read twice, 18 bytes per element), the codes and maxima equal to the reference path's dequantize,
update, requantize. The engine's dispatch registry (:mod:`memopt.optim.dispatch`) gives it a parameter
when :func:`group_applies` and :func:`eligible` hold; everything else keeps its usual path.
"""

from __future__ import annotations

import ctypes

import torch

from memopt.estimators.base import MomentumEstimator, ParamStep, SecondMomentEstimator
from memopt.estimators.second_moment import effective_eps, root_correction
from memopt.estimators.subset_norm import subset_partition
from memopt.kernels import quant8
from memopt.kernels.build import bind
from memopt.kernels.triton import blockwise
from memopt.state import quantization, sharding
from memopt.state.formats import Blockwise8bit, QuantizedState

_FLOAT_P = ctypes.POINTER(ctypes.c_float)


_OPTIONS = [
    ctypes.c_float,
    ctypes.c_float,
    ctypes.c_float,
    ctypes.c_int,
    ctypes.c_float,
    ctypes.c_float,
    ctypes.c_float,
    ctypes.c_int,
    ctypes.c_float,
    ctypes.c_int,
]


def _library() -> ctypes.CDLL | None:
    return bind("subset_norm", {
        "memopt_subset_norm_step": (ctypes.c_int, [
            _FLOAT_P, _FLOAT_P, _FLOAT_P, _FLOAT_P, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, *_OPTIONS]),
        "memopt_subset_norm_step_8bit": (ctypes.c_int, [
            _FLOAT_P, _FLOAT_P, ctypes.c_void_p, _FLOAT_P, _FLOAT_P, _FLOAT_P, ctypes.c_int, ctypes.c_int64,
            _FLOAT_P, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, *_OPTIONS]),
    })  # fmt: skip


def available() -> bool:
    """Whether the kernel is built and loaded (see :mod:`memopt.kernels.build`)."""
    return _library() is not None


def group_applies(group: dict, momentum: MomentumEstimator, second: SecondMomentEstimator) -> bool:
    """Whether the group's update is Subset-Norm with EMA momentum (any ``beta1``, 0 included) or none.

    Every other option of these estimators is handled: ``betas``, ``eps`` and ``eps_placement``,
    ``bias_correction``, ``lr_decay``, decoupled weight decay and its placement, and ``subset_size``;
    ``maximize`` and coupled weight decay reach the kernel already applied to the gradient, and the
    engine keeps ``update_momentum`` groups on the reference path.
    """
    return second.name == "subset_norm" and momentum.name in ("ema", "none")


def eligible(param: torch.Tensor, grad: torch.Tensor, state: dict) -> bool:
    """Whether ``param`` is a contiguous float32 CPU tensor whose every state tensor is a plain contiguous
    float32 CPU tensor, except the momentum, which may be stored in 8 bits (:class:`Blockwise8bit`: the kernel
    reads and writes its codes, or where it cannot (:func:`_codes_in_place`) it is dequantized before the
    kernel and quantized after it, as on the reference path); no 4-bit or 16-bit state. The local piece of a
    sharded parameter (its state seen through :class:`~memopt.state.sharding.LocalState`) is refused: its
    subsets may need other ranks' sums."""
    if isinstance(state, sharding.LocalState):
        return False
    if not (
        param.device.type == "cpu"
        and param.dtype == torch.float32
        and grad.dtype == torch.float32
        and param.is_contiguous()
        and "subset_sq" in state
    ):
        return False
    for key, value in state.items():
        if isinstance(value, QuantizedState):
            if key != "exp_avg" or not isinstance(value.format, Blockwise8bit):
                return False
            continue  # the momentum is loaded into float32 and stored back around the kernel
        if torch.is_tensor(value) and not (
            value.dtype == torch.float32 and value.device.type == "cpu" and value.is_contiguous()
        ):
            return False
    return available()


def _ptr(tensor: torch.Tensor | None):
    return None if tensor is None else ctypes.cast(tensor.data_ptr(), _FLOAT_P)


def step(steps: list[ParamStep], group: dict, momentum: MomentumEstimator, step_sizes: list[float]) -> None:
    """One Subset-Norm step for ``steps`` (gradients already processed: maximize and coupled decay applied);
    ``step_sizes[i]`` is the learning rate of ``steps[i]``'s step over the first bias correction."""
    library = _library()
    beta1, beta2 = group["betas"]
    lr, wd = group["lr"], group["weight_decay"]
    decay = 1 - lr * wd if wd != 0 and group["decoupled_weight_decay"] else 1.0
    decay_after = int(group["weight_decay_placement"] == "after_update")
    uses_momentum = momentum.name == "ema" and beta1 > 0
    threads = torch.get_num_threads()
    for ps, size in zip(steps, step_sizes):
        # fake tensors (the memory planner's estimate) have no data, and the kernel allocates no tensors
        if ps.param.untyped_storage().device.type == "meta" or ps.param.numel() == 0:
            continue
        (rows, cols), reduce_dim = subset_partition(tuple(ps.shape), group["subset_size"])
        grad = ps.grad.contiguous()  # kept referenced while the kernel reads it
        acc = ps.state["subset_sq"]
        if ps.work.numel() != rows * cols or acc.numel() != (cols if reduce_dim == 0 else rows):
            raise RuntimeError(
                f"internal error: the Subset-Norm kernel got {ps.name} as a {tuple(ps.work.shape)} piece with "
                f"{acc.numel()} accumulators for a ({rows}, {cols}) partition; only whole tensors are eligible"
            )
        options = (
            1 - beta1, beta2, 1 - beta2, int(beta2 != 1), root_correction(group, ps.step),
            effective_eps(group, ps.step), decay, decay_after, -size, threads,
        )  # fmt: skip
        quantized = uses_momentum and isinstance(ps.state["exp_avg"], QuantizedState)
        if quantized and _codes_in_place(ps.state["exp_avg"]):
            # 8-bit momentum read and written as codes by the kernel (no float32 copy)
            entry = ps.state["exp_avg"]
            failed = library.memopt_subset_norm_step_8bit(
                _ptr(ps.work), _ptr(grad), sharding.local(entry.codes).data_ptr(), _ptr(entry.format.maxima(entry)),
                _ptr(quant8.code_values(entry.format.signed)), _ptr(quant8.code_midpoints(entry.format.signed)),
                int(entry.format.signed), entry.format.block_size, _ptr(acc), rows, cols, int(reduce_dim == 0),
                *options,
            )  # fmt: skip
            if failed:
                raise MemoryError(f"the Subset-Norm kernel could not allocate its buffers for {ps.name}")
            continue
        # other 8-bit momentum: dequantized into float32, updated by the kernel, quantized back, as the
        # reference path does (ParamStep.load / store)
        exp_avg = ps.load("exp_avg", torch.float32) if quantized else ps.state.get("exp_avg")
        failed = library.memopt_subset_norm_step(
            _ptr(ps.work), _ptr(grad), _ptr(exp_avg if uses_momentum else None),
            _ptr(acc), rows, cols, int(reduce_dim == 0), *options,
        )  # fmt: skip
        if failed:
            raise MemoryError(f"the Subset-Norm kernel could not allocate its column buffers for {ps.name}")
        if quantized:
            ps.store("exp_avg", exp_avg)


def _codes_in_place(entry: QuantizedState) -> bool:
    """Whether the kernel can update the 8-bit momentum's codes directly: codes a contiguous uint8 CPU tensor
    quantized on their own (blocks from the first element), float32 maxima, and no Triton codec for them (as
    :meth:`Blockwise8bit.store` chooses, the Triton codec first, then the C kernels)."""
    fmt = entry.format
    return (
        isinstance(fmt, Blockwise8bit)
        and not torch.compiler.is_compiling()
        and entry.codes.dtype == torch.uint8
        and entry.codes.device.type == "cpu"
        and entry.codes.is_contiguous()
        and fmt.quantized_alone(entry)
        and fmt.maxima(entry).dtype == torch.float32
        and fmt.maxima(entry).is_contiguous()
        and blockwise.codec(entry.codes) is quantization  # a Triton codec where one takes the tensor comes first
    )
