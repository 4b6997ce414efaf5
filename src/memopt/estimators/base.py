"""The two interchangeable parts of an adaptive update, and what the engine hands them each step.

An update of one parameter is ``theta <- theta - step_size * precondition(numerator(g))``:

* a :class:`MomentumEstimator` turns the gradient into the numerator (plain gradient, EMA momentum,
  heavy-ball momentum, Subspace-Momentum) and owns the first bias correction;
* a :class:`SecondMomentEstimator` keeps the statistics of squared gradients and divides by them
  (none, coordinate-wise, Subset-Norm, AdaGrad-Norm).

Estimators are stateless strategy objects: every tensor they keep lives in ``optimizer.state[p]`` under
fixed key names (so checkpoints do not depend on composition order), and every hyperparameter lives in the
parameter group (so LR schedulers and ``state_dict`` work as in ``torch.optim``).

Each estimator has a readable per-tensor method (the reference) and a ``*_many`` method over all the
parameters of a group (the fast path). The defaults of the ``*_many`` methods loop over the reference, so
an estimator only writes a fast version where it pays.

A sharded parameter (FSDP2) reaches the estimators as its local piece: ``ParamStep.param``, ``grad`` and
the tensors of ``state`` are local, ``ParamStep.shard`` says where they sit in the whole tensor and
combines partial results (:mod:`.sharding`), and every decision about the math is taken from the global
shape ``ParamStep.shape``. ``state_template`` receives the parameter itself (a DTensor then) and declares
each state as a :class:`~memopt.state.template.StateSlot` (its kind, global shape, and whether it is
row-sharded); the optimizer creates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from memopt.state import sharding, storage
from memopt.state.rounding import stochastic_round_to_bfloat16
from memopt.state.template import StateSlot
from memopt.validation import name_list, warn_at_caller


@dataclass
class ParamStep:
    """One parameter's inputs to one optimizer step.

    ``grad`` is already in the compute dtype, negated for ``maximize`` and with coupled weight decay
    added. ``work`` is the parameter in the compute dtype (the parameter itself when the dtypes agree).
    """

    param: torch.Tensor
    work: torch.Tensor
    grad: torch.Tensor
    state: dict
    step: int
    #: position of the parameter in the optimizer (over all groups), for messages and random seeds
    index: int
    name: str
    #: state shared by the whole group (kept in the state of the group's first parameter)
    group_state: dict
    #: this step's freshly computed states in the compute dtype: later stages of the same step read these
    #: rather than the stored (possibly quantized) copies, as a fused kernel would keep them in registers
    fresh: dict = field(default_factory=dict)
    #: the source of randomness for stochastic rounding of bfloat16 state (None: round to nearest)
    rounding: torch.Generator | None = None
    #: where ``param`` (the local piece) sits in the whole parameter; whole for an unsharded parameter
    shard: sharding.ShardSpec | None = None

    def __post_init__(self) -> None:
        if self.shard is None:
            self.shard = sharding.whole(self.param.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        """The parameter's global shape (every decision about the math is taken from it)."""
        return self.shard.shape

    def load(self, key: str, dtype: torch.dtype) -> torch.Tensor:
        """The state ``key`` in ``dtype``: this step's fresh value if stored already, else the stored one."""
        return storage.load(self.state, key, dtype, self.fresh)

    def store(self, key: str, value: torch.Tensor) -> None:
        """Write the state ``key`` back to its storage format, keeping ``value`` for the rest of the step."""
        storage.store(self.state, key, value, self.fresh, self.rounding)

    def write_back(self) -> None:
        """Write ``work`` (the updated parameter in the compute dtype) into the parameter: nothing to do when
        they are one tensor; rounded stochastically for a bfloat16 parameter with a rounding generator."""
        if self.work is self.param:
            return
        if self.rounding is not None and self.param.dtype == torch.bfloat16:
            stochastic_round_to_bfloat16(self.work, self.rounding, out=self.param)
        else:
            self.param.copy_(self.work)


class Estimator:
    """What both kinds of estimator share: hyperparameters, validation, lazy state, load checks."""

    #: the registry name (``momentum_type`` / ``second_moment_type``), set by ``@register_estimator``
    name: ClassVar[str] = ""
    #: hyperparameter name -> default, merged into every parameter group that uses the estimator
    hyperparameters: ClassVar[dict[str, Any]] = {}

    def validate_group(self, group: dict) -> None:
        """Raise ``ValueError`` naming the hyperparameter if a value in ``group`` is invalid."""

    def check_param(self, param: torch.Tensor, group: dict, name: str) -> str | None:
        """Raise ``ValueError`` if ``param`` cannot be handled with ``group``'s settings; return a short
        note (the parameter and what it gets) when a setting is adjusted for it, for :meth:`check_params`."""
        return None

    def adjustment_warning(self, group: dict, notes: list[str]) -> str:
        """The one warning for a group whose settings :meth:`check_param` adjusted for some parameters."""
        return f"{type(self).__name__} adjusted its settings for {name_list(notes)}."

    def check_params(self, group: dict, named_params: list[tuple[str, torch.Tensor]]) -> None:
        """:meth:`check_param` for every parameter of a group, then at most one warning listing the
        parameters whose settings were adjusted, attributed to the user's line (not one per matrix)."""
        notes = [note for name, param in named_params if (note := self.check_param(param, group, name))]
        if notes:
            warn_at_caller(self.adjustment_warning(group, notes))

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """The state this estimator keeps for ``param`` (the parameter itself: a DTensor when sharded), as
        data: key -> :class:`~memopt.state.template.StateSlot`. The optimizer creates it at the first step,
        by ``prepare_state`` and on the meta device to check a loaded checkpoint, and counts it without
        allocating (:func:`memopt.state.accounting.template_bytes`)."""
        return {}

    def group_state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """State shared by the whole group, kept in the state of its first parameter ``param`` (created at
        the group's first step, or by ``prepare_state``)."""
        return {}

    def check_loaded_state(self, param: torch.Tensor, state: dict, group: dict) -> None:
        """Raise ``ValueError`` if a loaded ``state`` (in the checkpoint layout) does not fit ``group``'s
        settings in a way the template's keys and shapes cannot tell (e.g. a saved tensor index)."""


class MomentumEstimator(Estimator):
    """Produces the numerator of the update from the (processed) gradient."""

    def numerator(self, ps: ParamStep, group: dict) -> torch.Tensor:
        """The numerator for this step. It may be a state tensor: callers must not modify it."""
        raise NotImplementedError

    def bias_correction(self, group: dict, step: int) -> float:
        """The divisor of the step size that corrects the numerator's initialization bias (1 if none)."""
        return 1.0

    def numerator_many(self, steps: list[ParamStep], group: dict) -> list[torch.Tensor]:
        """Fast path over a whole group; by default the reference, tensor by tensor."""
        return [self.numerator(ps, group) for ps in steps]


class SecondMomentEstimator(Estimator):
    """Keeps statistics of squared gradients and divides the numerator by them."""

    def prepare_group(self, steps: list[ParamStep], group: dict) -> None:
        """Called once per group before the per-parameter updates (statistics over a whole group)."""

    def update(self, ps: ParamStep, group: dict) -> None:
        """Accumulate this step's statistics from ``ps.grad``."""

    def precondition(self, numerator: torch.Tensor, ps: ParamStep, group: dict) -> torch.Tensor:
        """A new tensor: ``numerator`` divided by the current denominator."""
        return numerator

    def update_many(self, steps: list[ParamStep], group: dict) -> None:
        """Fast path of :meth:`update` over a whole group."""
        for ps in steps:
            self.update(ps, group)

    def apply_many(
        self, steps: list[ParamStep], numerators: list[torch.Tensor], step_sizes: list[float], group: dict
    ) -> None:
        """Fast path of ``work -= step_size * precondition(numerator)`` over a whole group."""
        for ps, num, step_size in zip(steps, numerators, step_sizes):
            ps.work.add_(self.precondition(num, ps, group), alpha=-step_size)
