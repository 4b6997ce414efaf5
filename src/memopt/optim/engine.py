"""The one optimizer engine under every memopt preset.

For each parameter with a gradient, one step is::

    g      <- -grad if maximize else grad;   g <- g + wd * theta      (coupled weight decay, Adam/SGD style)
    theta  <- theta * (1 - lr * wd)                                     (decoupled weight decay, AdamW style;
                                                                         after the update with
                                                                         weight_decay_placement="after_update")
    N      <- momentum.numerator(g)                                     (none, EMA, heavy ball, subspace)
    V      <- second_moment.update(g)                                   (none, coordinate, Subset-Norm, AdaGrad-Norm)
    U      <- N / D(V)                                                  (second_moment.precondition)
    U      <- B <- mu_u * B + U                                         (optional: ``update_momentum``, RMSProp's)
    theta  <- theta - lr / (1 + (t - 1) * lr_decay) / bc1(t) * U

``D(V)`` adds ``eps`` after the second moment's bias correction, PyTorch style, or before it with
``eps_placement="before_bias_correction"`` (the Subset-Norm authors' and Hugging Face's convention).

The estimators are chosen per parameter group by ``momentum_type`` and ``second_moment_type`` and keep all
their state in ``self.state[p]``; hyperparameters live in ``param_groups``. Two paths run the same math:

* the **reference** path, tensor by tensor and readable, computing in float32 for 16-bit parameters (and
  for state held in 16 or 8 bits, see :mod:`memopt.state.storage`);
* the **fast** implementations (``foreach=None`` or ``True``), a registry in :mod:`memopt.optim.dispatch`:
  each declares which groups (estimators, options) and which parameters (device, dtypes, storage) it
  handles, and a parameter goes to the first that applies (the 8-bit AdamW C kernel, torch's fused Adam,
  the estimators' foreach methods), else to the reference path. Tests hold them equal to the reference path.

The estimators are looked up by name in :mod:`memopt.estimators.registry` (``@register_estimator``).

Sharded parameters (FSDP2 DTensors) go through the same paths on their local pieces; their state is held
as DTensors and the estimators combine partial results across the shard group (:mod:`memopt.state.sharding`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch

from memopt.estimators.base import MomentumEstimator, ParamStep, SecondMomentEstimator
from memopt.estimators.registry import MOMENTUM, SECOND_MOMENT
from memopt.optim import dispatch
from memopt.optim.base import STORAGE_OPTIONS, MemoptBase, param_name
from memopt.state import sharding, storage
from memopt.state.template import StateSlot, like_param, raw
from memopt.validation import check_betas, check_choice, check_non_negative

#: hyperparameters every group has, with their defaults
ENGINE_HYPERPARAMETERS: dict[str, Any] = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "decoupled_weight_decay": True,
    "bias_correction": True,
    "maximize": False,
    "lr_decay": 0.0,
    "eps_placement": "after_bias_correction",
    "weight_decay_placement": "before_update",
    "update_momentum": 0.0,
    "momentum_type": "ema",
    "second_moment_type": "coordinate",
    "foreach": None,
    **STORAGE_OPTIONS,
}


#: ``eps_placement``: PyTorch's ``sqrt(V / (1 - beta2^t)) + eps``, or the Subset-Norm authors' (and Hugging Face
#: AdamW's) ``(sqrt(V) + eps) / sqrt(1 - beta2^t)``, an effective eps of ``eps / sqrt(1 - beta2^t)``
EPS_PLACEMENTS = ("after_bias_correction", "before_bias_correction")
#: ``weight_decay_placement`` of decoupled decay ``theta <- theta (1 - lr wd)``: before the update
#: (``torch.optim.AdamW``) or after it, on the updated parameter (the Subset-Norm authors' code)
WEIGHT_DECAY_PLACEMENTS = ("before_update", "after_update")


def resolve_estimators(group: dict) -> tuple[MomentumEstimator, SecondMomentEstimator]:
    """The estimators a group uses. ``rank=None`` turns Subspace-Momentum into EMA momentum and
    ``subset_size=None`` turns Subset-Norm into coordinate-wise accumulators."""
    momentum_type = group["momentum_type"]
    if momentum_type == "subspace" and group.get("rank") is None:
        momentum_type = "ema"
    second_type = group["second_moment_type"]
    if second_type == "subset_norm" and group.get("subset_size") is None:
        second_type = "coordinate"
    return MOMENTUM[momentum_type], SECOND_MOMENT[second_type]


class MemoptOptimizer(MemoptBase):
    """Base class of every memopt optimizer: a ``torch.optim.Optimizer`` assembled from estimators.

    Subclasses (the presets) only choose ``defaults``. Groups may override any hyperparameter, including
    ``momentum_type`` and ``second_moment_type``.
    """

    #: engine hyperparameters that a preset computes from its own (torch's) names in :meth:`_derived`; they are
    #: kept out of ``defaults``, so that LR schedulers see only torch's names: ``OneCycleLR`` / ``CyclicLR``
    #: cycle ``betas[0]`` when ``defaults`` has ``betas``, else ``momentum``, else refuse ``cycle_momentum``
    DERIVED: tuple[str, ...] = ()

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], defaults: dict[str, Any]) -> None:
        merged = {**ENGINE_HYPERPARAMETERS, **defaults}
        super().__init__(params, {k: v for k, v in merged.items() if k not in self.DERIVED})

    def _derived(self, group: dict) -> dict[str, Any]:
        """The :data:`DERIVED` hyperparameters of ``group``, from its own (default: none)."""
        return {}

    # ----------------------------------------------------------------------------------------- groups
    def _complete_group(self, group: dict) -> None:
        group.update(self._derived(group))
        for key in ("eps_placement", "weight_decay_placement"):  # groups saved before these options existed
            group.setdefault(key, ENGINE_HYPERPARAMETERS[key])
        check_choice("momentum_type", group["momentum_type"], MOMENTUM)
        check_choice("second_moment_type", group["second_moment_type"], SECOND_MOMENT)
        declared = (MOMENTUM[group["momentum_type"]], SECOND_MOMENT[group["second_moment_type"]])
        for estimator in (*declared, *resolve_estimators(group)):
            for key, default in estimator.hyperparameters.items():
                group.setdefault(key, default)
        if isinstance(group["betas"], list):
            group["betas"] = tuple(group["betas"])

    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        for key in ("lr", "eps", "weight_decay", "lr_decay", "update_momentum"):
            check_non_negative(key, group[key])
        check_betas(group["betas"])
        check_choice("eps_placement", group["eps_placement"], EPS_PLACEMENTS)
        check_choice("weight_decay_placement", group["weight_decay_placement"], WEIGHT_DECAY_PLACEMENTS)
        momentum, second = resolve_estimators(group)
        momentum.validate_group(group)
        second.validate_group(group)
        named = [(param_name(group, group_index, i, param), param) for i, param in enumerate(group["params"])]
        momentum.check_params(group, named)
        second.check_params(group, named)

    # ------------------------------------------------------------------------------------------- state
    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """The step counter, the estimators' slots (momentum first) and RMSProp's ``update_buffer``."""
        momentum, second = resolve_estimators(group)
        template = {"step": raw(0), **momentum.state_template(param, group), **second.state_template(param, group)}
        if group["update_momentum"] > 0:
            template["update_buffer"] = like_param(param)
        return template

    def group_state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """State the second-moment estimator shares over the group (AdaGrad-Norm's ``global_norm_sq``)."""
        return resolve_estimators(group)[1].group_state_template(param, group)

    def _check_loaded_state(self, param: torch.Tensor, state: dict, group: dict, name: str) -> None:
        for estimator in resolve_estimators(group):
            estimator.check_loaded_state(param, state, group)
        super()._check_loaded_state(param, state, group, name)

    def _load_hint(self) -> str:
        return (
            " The checkpoint was saved from a different model or optimizer configuration (for example "
            "another rank, subset_size or optimizer); load it into the configuration it was saved from."
        )

    # -------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step. ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = 0
        for group_index, group in enumerate(self.param_groups):
            group.update(self._derived(group))  # a scheduler may have changed the preset's own names
            self._step_group(group, group_index, index)
            index += len(group["params"])
        return loss

    @torch.no_grad()
    def step_params(self, params: Iterable[torch.Tensor]) -> None:
        """Step only ``params`` (those with a gradient), each exactly as :meth:`step` would: the same
        implementation, state and stochastic-rounding seed (the index over all groups). The other parameters
        and their gradients are left alone, so that a caller can step each parameter as soon as its gradient
        is ready (:mod:`memopt.offload`). A group whose second-moment estimator needs every gradient of the
        group before the first update (``prepare_group``, e.g. AdaGrad-Norm) must be given whole; see
        :meth:`needs_whole_group`."""
        only = {id(p) for p in params}
        index = 0
        for group_index, group in enumerate(self.param_groups):
            if any(id(p) in only for p in group["params"]):
                self._step_group(group, group_index, index, only)
            index += len(group["params"])

    @staticmethod
    def needs_whole_group(group: dict) -> bool:
        """Whether ``group``'s parameters must be stepped together: its second-moment estimator reads every
        gradient of the group before the first update (``prepare_group``)."""
        second = resolve_estimators(group)[1]
        return type(second).prepare_group is not SecondMomentEstimator.prepare_group

    def _step_group(self, group: dict, group_index: int, first_index: int, only: set[int] | None = None) -> None:
        momentum, second = resolve_estimators(group)
        candidates = dispatch.candidates(group, momentum, second)
        implementations = {i.name: i for i in candidates}
        fast: dict[str, list[ParamStep]] = {}  # implementation name -> its parameters
        reference: list[Callable[[], ParamStep]] = []
        first = group["params"][0] if group["params"] else None
        group_state = sharding.local_state(first, self.state[first]) if first is not None else {}
        for index, param, name in self._params_with_grad(group, group_index, only):
            state, _ = self._advance(param, group)
            make = functools.partial(self._param_step, param, state, group, index, name, group_state=group_state)
            chosen = dispatch.choose(candidates, sharding.local(param), sharding.local(param.grad), state)
            if chosen is None:
                reference.append(make)
            else:
                fast.setdefault(chosen.name, []).append(make(cast_grad=False))
        fast_steps = [ps for steps in fast.values() for ps in steps]
        if not fast_steps and not reference:
            return
        self._process_gradients(fast_steps, group, foreach=True)
        self._init_group_state(group)  # at the group's first step
        # The reference path builds each parameter's compute-dtype copies (of a 16-bit parameter and its
        # gradient) just before its update, so that the step's temporaries are one parameter's, not the
        # group's; unless the second-moment estimator needs every gradient before the first update.
        built: list[ParamStep | None] | None = None
        if self.needs_whole_group(group):
            built = [make() for make in reference]
            self._process_gradients(built, group, foreach=False)
        second.prepare_group(fast_steps + (built or []), group)
        for name, steps in fast.items():
            implementations[name].step(steps, group, momentum, second)
        for i, make in enumerate(reference):
            if built is None:
                ps = make()
                self._process_gradients([ps], group, foreach=False)
            else:
                ps, built[i] = built[i], None  # dropped once updated
            self._reference_update(ps, group, momentum, second)

    @staticmethod
    def _process_gradients(steps: list[ParamStep], group: dict, *, foreach: bool) -> None:
        """Apply ``maximize`` and coupled weight decay to the gradients (new tensors; ``.grad`` is kept)."""
        if not steps:
            return
        wd = group["weight_decay"]
        coupled = wd != 0 and not group["decoupled_weight_decay"]
        if foreach:
            grads = [ps.grad for ps in steps]
            if group["maximize"]:
                grads = torch._foreach_neg(grads)
            if coupled:
                grads = torch._foreach_add(grads, [ps.work for ps in steps], alpha=wd)
            for ps, grad in zip(steps, grads):
                ps.grad = grad
            return
        for ps in steps:
            if group["maximize"]:
                ps.grad = -ps.grad
            if coupled:
                ps.grad = ps.grad.add(ps.work, alpha=wd)

    def _reference_update(
        self, ps: ParamStep, group: dict, momentum: MomentumEstimator, second: SecondMomentEstimator
    ) -> None:
        decay_first = group["weight_decay_placement"] == "before_update"
        if decay_first:
            dispatch.decoupled_decay([ps.work], group)
        numerator = momentum.numerator(ps, group)
        second.update(ps, group)
        update = second.precondition(numerator, ps, group)
        mu = group["update_momentum"]
        if mu > 0:
            if "update_buffer" not in ps.state:  # update_momentum switched on after the state was created
                storage.create(ps.state, "update_buffer", ps.param, group)
            buffer = ps.load("update_buffer", update.dtype)
            buffer.mul_(mu).add_(update)
            ps.store("update_buffer", buffer)
            update = buffer
        ps.work.add_(update, alpha=-dispatch.step_size(group, momentum, ps.step))
        if not decay_first:
            dispatch.decoupled_decay([ps.work], group)
        ps.write_back()
