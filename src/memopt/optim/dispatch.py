"""Which implementation updates a parameter: a registry of fast implementations, the reference path last.

Each :class:`Implementation` declares when it applies, in two parts:

* ``group_applies(group, momentum, second)``: the estimators (by registry name) and group options it
  implements, e.g. "exactly AdamW";
* ``param_applies(piece, grad, state)``: what it needs of one parameter's local piece, gradient and state
  (device, dtypes, contiguity, how the state is stored).

The engine (:mod:`memopt.optim.engine`) gives each parameter to the first registered implementation that
applies, and to its readable reference path when none does. Every implementation computes exactly the
reference's update (tests hold them equal); its ``step(steps, group, momentum, second)`` receives the
group's :class:`~memopt.estimators.base.ParamStep` objects with processed gradients (``maximize`` and
coupled weight decay applied).

Registered, in order:

0. ``triton_adamw8bit`` and ``triton_subset_norm``: the Triton kernels (:mod:`memopt.kernels.triton_steps`)
   for AdamW groups whose moments are 8-bit codes and for Subset-Norm groups with EMA momentum and float32
   state, on float32 CUDA parameters when Triton is installed;
1. ``adamw8bit_kernel``: the fused C kernel (:mod:`memopt.kernels.adamw8bit`) for AdamW groups whose
   moments are 8-bit codes, float32 CPU parameters;
2. ``torch_fused_adam``: torch's fused Adam/AdamW (:mod:`memopt.optim.fused`) for AdamW groups with state
   in the parameter's dtype (float32/float64);
3. ``subset_norm_kernel``: the one-pass C kernel (:mod:`memopt.kernels.subset_norm`) for Subset-Norm groups
   with EMA momentum or none (Adam-, RMSProp-, AdaGrad-SN), float32 CPU parameters with float32 state;
4. ``foreach``: the estimators' ``*_many`` methods (``torch._foreach_*``) for any group with state in the
   parameter's dtype.

``foreach=False`` in a group, and RMSProp's ``update_momentum``, send every parameter to the reference path.
Under ``torch.compile`` (``torch.compiler.is_compiling()``) the implementations that cannot be traced (the C
kernel, torch's fused kernel) are skipped: a compiled step runs the foreach or reference path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from memopt.estimators.base import MomentumEstimator, ParamStep, SecondMomentEstimator
from memopt.kernels import adamw8bit, quant8, subset_norm, triton_steps
from memopt.optim.fused import fused_adam_applies, fused_adam_step
from memopt.state.formats import QuantizedState, register_8bit_kernel

GroupTest = Callable[[dict, MomentumEstimator, SecondMomentEstimator], bool]
ParamTest = Callable[[torch.Tensor, torch.Tensor, dict], bool]
StepFn = Callable[[list[ParamStep], dict, MomentumEstimator, SecondMomentEstimator], None]

_FAST_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class Implementation:
    """A fast implementation of the engine's update and when it applies (see the module docstring)."""

    name: str
    group_applies: GroupTest
    param_applies: ParamTest
    step: StepFn
    #: whether ``torch.compile`` can trace it; under compilation the others are skipped (the next that applies,
    #: or the reference path, computes the same update)
    traceable: bool = True


IMPLEMENTATIONS: list[Implementation] = []


def register_implementation(implementation: Implementation) -> Implementation:
    """Append ``implementation`` to the registry (earlier registrations are preferred)."""
    if any(i.name == implementation.name for i in IMPLEMENTATIONS):
        raise ValueError(f"An implementation named {implementation.name!r} is already registered.")
    IMPLEMENTATIONS.append(implementation)
    return implementation


def candidates(group: dict, momentum: MomentumEstimator, second: SecondMomentEstimator) -> list[Implementation]:
    """The registered implementations that apply to ``group`` (before looking at its parameters)."""
    if group["foreach"] is False or group["update_momentum"] != 0:
        return []
    compiling = torch.compiler.is_compiling()
    return [
        i for i in IMPLEMENTATIONS if (i.traceable or not compiling) and i.group_applies(group, momentum, second)
    ]


def choose(candidates: list[Implementation], piece: torch.Tensor, grad: torch.Tensor, state: dict):
    """The first of ``candidates`` that applies to the parameter (None: the reference path)."""
    return next((i for i in candidates if i.param_applies(piece, grad, state)), None)


def state_in_param_dtype(piece: torch.Tensor, grad: torch.Tensor, state: dict) -> bool:
    """In-place updates: a float32/float64 contiguous parameter whose every state tensor has its dtype (or
    holds projector indices); quantized or lower-precision state goes through the reference path. bfloat16
    parameters and states (the only ones stochastic rounding touches) are never eligible."""
    return (
        piece.dtype in _FAST_DTYPES
        and piece.is_contiguous()
        and not any(isinstance(v, QuantizedState) for v in state.values())
        and all(v.dtype in (piece.dtype, torch.int64) for v in state.values() if torch.is_tensor(v))
    )


def is_adam(group: dict, momentum: MomentumEstimator, second: SecondMomentEstimator) -> bool:
    """Whether the group's update is exactly Adam/AdamW with the options torch's fused kernel has."""
    return fused_adam_applies(group, momentum.name, second.name)


def decoupled_decay(works: list[torch.Tensor], group: dict) -> None:
    """``theta <- theta (1 - lr wd)`` with the base lr, when the group's weight decay is decoupled."""
    lr, wd = group["lr"], group["weight_decay"]
    if wd != 0 and group["decoupled_weight_decay"]:
        torch._foreach_mul_(works, 1 - lr * wd)


def _foreach_step(steps: list[ParamStep], group: dict, momentum: MomentumEstimator, second) -> None:
    """The estimators' multi-tensor methods: decoupled decay, numerators, statistics, fused combine."""
    decay_first = group["weight_decay_placement"] == "before_update"
    if decay_first:
        decoupled_decay([ps.work for ps in steps], group)
    numerators = momentum.numerator_many(steps, group)
    second.update_many(steps, group)
    step_sizes = [step_size(group, momentum, ps.step) for ps in steps]
    second.apply_many(steps, numerators, step_sizes, group)
    if not decay_first:
        decoupled_decay([ps.work for ps in steps], group)


def step_size(group: dict, momentum: MomentumEstimator, step: int) -> float:
    """``lr / (1 + (t - 1) lr_decay) / bc1(t)``: the learning rate of step ``t`` over the first bias correction."""
    lr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
    return lr / momentum.bias_correction(group, step)


# the load and store of every 8-bit state that the reference and foreach paths read: quant8's C kernel
register_8bit_kernel(quant8.KERNEL)

register_implementation(
    Implementation(
        "triton_adamw8bit",
        group_applies=is_adam,
        param_applies=triton_steps.adamw8bit_eligible,
        step=lambda steps, group, momentum, second: triton_steps.adamw8bit_step(steps, group),
        traceable=False,  # a Triton launch outside torch.library
    )
)
register_implementation(
    Implementation(
        "triton_subset_norm",
        group_applies=triton_steps.subset_norm_applies,
        param_applies=triton_steps.subset_norm_eligible,
        step=lambda steps, group, momentum, second: triton_steps.subset_norm_step(
            steps, group, [step_size(group, momentum, ps.step) for ps in steps]
        ),
        traceable=False,
    )
)
register_implementation(
    Implementation(
        "adamw8bit_kernel",
        group_applies=is_adam,
        param_applies=adamw8bit.eligible,
        step=lambda steps, group, momentum, second: adamw8bit.step(steps, group),
        traceable=False,  # a C call through ctypes
    )
)
register_implementation(
    Implementation(
        "torch_fused_adam",
        group_applies=is_adam,
        param_applies=state_in_param_dtype,
        step=lambda steps, group, momentum, second: fused_adam_step(steps, group),
        traceable=False,  # its step tensors, made per call, cannot be mutated inside a compiled graph
    )
)
register_implementation(
    Implementation(
        "subset_norm_kernel",
        group_applies=subset_norm.group_applies,
        param_applies=subset_norm.eligible,
        step=lambda steps, group, momentum, second: subset_norm.step(
            steps, group, momentum, [step_size(group, momentum, ps.step) for ps in steps]
        ),
        traceable=False,  # a C call through ctypes
    )
)
register_implementation(
    Implementation(
        "foreach",
        group_applies=lambda group, momentum, second: True,
        param_applies=state_in_param_dtype,
        step=_foreach_step,
    )
)
