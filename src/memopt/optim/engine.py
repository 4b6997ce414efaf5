"""The one optimizer engine under every memopt preset.

For each parameter with a gradient, one step is::

    g      <- -grad if maximize else grad;   g <- g + wd * theta      (coupled weight decay, Adam/SGD style)
    theta  <- theta * (1 - lr * wd)                                     (decoupled weight decay, AdamW style)
    N      <- momentum.numerator(g)                                     (none, EMA, heavy ball, subspace)
    V      <- second_moment.update(g)                                   (none, coordinate, Subset-Norm, AdaGrad-Norm)
    U      <- N / D(V)                                                  (second_moment.precondition)
    U      <- B <- mu_u * B + U                                         (optional: ``update_momentum``, RMSProp's)
    theta  <- theta - lr / (1 + (t - 1) * lr_decay) / bc1(t) * U

The estimators are chosen per parameter group by ``momentum_type`` and ``second_moment_type`` and keep all
their state in ``self.state[p]``; hyperparameters live in ``param_groups``. Two paths run the same math:

* the **reference** path, tensor by tensor and readable, computing in float32 for 16-bit parameters (and
  for state held in 16 or 8 bits, see :mod:`memopt.state.storage`);
* the **fast** path (``foreach=None`` or ``True``), used for float32/float64 contiguous parameters whose
  state has their dtype: in-place updates, ``torch._foreach_*`` over the group, and the final combine fused
  into one ``addcdiv_``; groups that are exactly Adam/AdamW go to torch's fused Adam kernel
  (:mod:`memopt.optim.fused`). Tests hold it equal to the reference path.

Sharded parameters (FSDP2 DTensors) go through the same paths on their local pieces; their state is held
as DTensors and the estimators combine partial results across the shard group (:mod:`memopt.state.sharding`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import torch

from memopt.estimators.adagrad_norm import AdaGradNormSecondMoment
from memopt.estimators.base import MomentumEstimator, ParamStep, SecondMomentEstimator
from memopt.estimators.extreme_tensoring import ExtremeTensoringSecondMoment
from memopt.estimators.momentum import EMAMomentum, HeavyBallMomentum, NoMomentum
from memopt.estimators.second_moment import CoordinateSecondMoment, NoSecondMoment
from memopt.estimators.subset_norm import SubsetNormSecondMoment
from memopt.estimators.subspace_momentum import SubspaceMomentum
from memopt.kernels import adamw8bit
from memopt.optim.base import MemoptBase, param_name
from memopt.optim.fused import fused_adam_applies, fused_adam_step
from memopt.state import sharding, storage
from memopt.state.rounding import rounding_generator, stochastic_round_to_bfloat16
from memopt.validation import check_betas, check_bool, check_choice, check_non_negative, check_positive_int

MOMENTUM_ESTIMATORS: dict[str, MomentumEstimator] = {
    "none": NoMomentum(),
    "ema": EMAMomentum(),
    "heavy_ball": HeavyBallMomentum(),
    "subspace": SubspaceMomentum(),
}

SECOND_MOMENT_ESTIMATORS: dict[str, SecondMomentEstimator] = {
    "none": NoSecondMoment(),
    "coordinate": CoordinateSecondMoment(),
    "subset_norm": SubsetNormSecondMoment(),
    "adagrad_norm": AdaGradNormSecondMoment(),
    "extreme_tensoring": ExtremeTensoringSecondMoment(),
}

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
    "update_momentum": 0.0,
    "momentum_type": "ema",
    "second_moment_type": "coordinate",
    "foreach": None,
    "state_storage": "default",
    "quant_block_size": 256,
    "stochastic_rounding": False,
}

_FAST_DTYPES = (torch.float32, torch.float64)


def _kind(estimator: MomentumEstimator | SecondMomentEstimator) -> str:
    """The registry key of an estimator instance."""
    table = MOMENTUM_ESTIMATORS if isinstance(estimator, MomentumEstimator) else SECOND_MOMENT_ESTIMATORS
    return next(k for k, v in table.items() if v is estimator)


def resolve_estimators(group: dict) -> tuple[MomentumEstimator, SecondMomentEstimator]:
    """The estimators a group uses. ``rank=None`` turns Subspace-Momentum into EMA momentum and
    ``subset_size=None`` turns Subset-Norm into coordinate-wise accumulators."""
    momentum_type = group["momentum_type"]
    if momentum_type == "subspace" and group.get("rank") is None:
        momentum_type = "ema"
    second_type = group["second_moment_type"]
    if second_type == "subset_norm" and group.get("subset_size") is None:
        second_type = "coordinate"
    return MOMENTUM_ESTIMATORS[momentum_type], SECOND_MOMENT_ESTIMATORS[second_type]


def _blocks_start_at_the_piece(shard: sharding.ShardSpec, state: MutableMapping) -> bool:
    """Whether the 8-bit blocks of a parameter's moments start at its local piece's first element (``shard``
    says where the piece sits): a whole tensor, or a shard made of whole blocks, whose block maxima are
    sharded with it (:func:`memopt.state.storage.blocks_follow_shards`)."""
    if not shard.sharded:
        return True
    return all(sharding.state_spec(state, key).sharded for key in ("exp_avg_absmax", "exp_avg_sq_absmax"))


class MemoptOptimizer(MemoptBase):
    """Base class of every memopt optimizer: a ``torch.optim.Optimizer`` assembled from estimators.

    Subclasses (the presets) only choose ``defaults``. Groups may override any hyperparameter, including
    ``momentum_type`` and ``second_moment_type``.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], defaults: dict[str, Any]) -> None:
        super().__init__(params, {**ENGINE_HYPERPARAMETERS, **defaults})

    # ----------------------------------------------------------------------------------------- groups
    def _complete_group(self, group: dict) -> None:
        check_choice("momentum_type", group["momentum_type"], MOMENTUM_ESTIMATORS)
        check_choice("second_moment_type", group["second_moment_type"], SECOND_MOMENT_ESTIMATORS)
        declared = (MOMENTUM_ESTIMATORS[group["momentum_type"]], SECOND_MOMENT_ESTIMATORS[group["second_moment_type"]])
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
        check_choice("state_storage", group["state_storage"], storage.STORAGE_CHOICES)
        check_positive_int("quant_block_size", group["quant_block_size"])
        check_bool("stochastic_rounding", group["stochastic_rounding"])
        momentum, second = resolve_estimators(group)
        momentum.validate_group(group)
        second.validate_group(group)
        for position, param in enumerate(group["params"]):
            name = param_name(group, group_index, position, param)
            momentum.check_param(param, group, name)
            second.check_param(param, group, name)

    # ------------------------------------------------------------------------------------------- state
    @staticmethod
    def _init_state(param: torch.Tensor, state: dict, group: dict) -> None:
        momentum, second = resolve_estimators(group)
        state["step"] = 0
        momentum.init_state(param, state, group)
        second.init_state(param, state, group)
        if group["update_momentum"] > 0:
            storage.create(state, "update_buffer", param, group)

    def prepare_state(self) -> None:
        """Create every parameter's state as its first step would, without stepping (``step`` 0, zero
        tensors), e.g. as the template that ``torch.distributed.checkpoint.load`` fills in place."""
        for group in self.param_groups:
            for param in group["params"]:
                if "step" not in self.state[param]:
                    self._init_state(param, self.state[param], group)
            if group["params"]:
                first = group["params"][0]
                resolve_estimators(group)[1].init_group_state(first, self.state[first], group)

    def _check_loaded_state(self, param: torch.Tensor, state: dict, group: dict, name: str) -> None:
        """Reject state that this group's estimators would not have created for ``param``."""
        momentum, second = resolve_estimators(group)
        fresh: dict = {}
        self._init_state(param.detach().to("meta"), fresh, group)
        expected = {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in fresh.items()}
        expected.update(momentum.state_shapes(param, state, group))
        expected.update(second.state_shapes(param, state, group))
        hint = (
            " The checkpoint was saved from a different model or optimizer configuration (for example "
            "another rank, subset_size or optimizer); load it into the configuration it was saved from."
        )
        unknown = sorted(set(state) - set(expected))
        if unknown:
            raise ValueError(f"Cannot load optimizer state for {name}: unexpected state keys {unknown}.{hint}")
        missing = sorted(set(fresh) - set(state))
        if missing:
            raise ValueError(f"Cannot load optimizer state for {name}: missing state keys {missing}.{hint}")
        if not isinstance(state["step"], int):
            raise ValueError(f"Cannot load optimizer state for {name}: 'step' must be an int.{hint}")
        for key, value in state.items():
            shape = expected[key]
            if torch.is_tensor(value) and shape is not None and tuple(value.shape) != shape:
                raise ValueError(
                    f"Cannot load optimizer state for {name}: state {key!r} has shape {tuple(value.shape)}, "
                    f"expected {shape}.{hint}"
                )
        sharding.check_loaded_layout(fresh, state, name)

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
            self._step_group(group, group_index, index)
            index += len(group["params"])
        return loss

    def _step_group(self, group: dict, group_index: int, first_index: int) -> None:
        momentum, second = resolve_estimators(group)
        use_fast = group["foreach"] is not False and group["update_momentum"] == 0
        # parameters with 8-bit AdamW moments on CPU: the fused C kernel (memopt.kernels.adamw8bit)
        use_kernel = use_fast and fused_adam_applies(group, _kind(momentum), _kind(second))
        kernel: list[ParamStep] = []
        fast: list[ParamStep] = []
        reference: list[Callable[[], ParamStep]] = []
        first = group["params"][0] if group["params"] else None
        group_state = sharding.local_state(first, self.state[first]) if first is not None else {}
        for position, param in enumerate(group["params"]):
            if param.grad is None:
                continue
            name = param_name(group, group_index, position, param)
            if param.grad.is_sparse:
                raise ValueError(
                    f"{name} has a sparse gradient; memopt optimizers need dense gradients. Use "
                    "nn.Embedding(sparse=False), or torch.optim.SparseAdam for that parameter."
                )
            if "step" not in self.state[param]:
                self._init_state(param, self.state[param], group)
            self.state[param]["step"] += 1
            state = sharding.local_state(param, self.state[param])
            piece, shard = sharding.local(param), sharding.spec_of(param)
            make = functools.partial(
                self._param_step, param, piece, shard, state, group, first_index + position, name, group_state
            )
            # the kernel cuts 8-bit blocks from the local piece's first element: whole tensors, or shards
            # made of whole blocks (their block maxima are sharded with them)
            if (
                use_kernel
                and adamw8bit.eligible(piece, sharding.local(param.grad), state)
                and _blocks_start_at_the_piece(shard, state)
            ):
                kernel.append(make())
            elif use_fast and self._fast_eligible(piece, state):
                fast.append(make(cast_grad=False))
            else:
                reference.append(make)
        if not fast and not reference and not kernel:
            return
        self._process_gradients(fast + kernel, group, foreach=True)
        # The reference path builds each parameter's compute-dtype copies (of a 16-bit parameter and its
        # gradient) just before its update, so that the step's temporaries are one parameter's, not the
        # group's; unless the second-moment estimator needs every gradient before the first update.
        built: list[ParamStep | None] | None = None
        if type(second).prepare_group is not SecondMomentEstimator.prepare_group:
            built = [make() for make in reference]
            self._process_gradients(built, group, foreach=False)
        second.prepare_group(fast + kernel + (built or []), group)
        if kernel:
            adamw8bit.step(kernel, group)
        if fast:
            self._fast_update(fast, group, momentum, second)
        for i, make in enumerate(reference):
            if built is None:
                ps = make()
                self._process_gradients([ps], group, foreach=False)
            else:
                ps, built[i] = built[i], None  # dropped once updated
            self._reference_update(ps, group, momentum, second)

    @staticmethod
    def _param_step(
        param: torch.Tensor,
        piece: torch.Tensor,
        shard: sharding.ShardSpec,
        state: dict,
        group: dict,
        index: int,
        name: str,
        group_state: dict,
        *,
        cast_grad: bool = True,
    ) -> ParamStep:
        """``param``'s inputs to this step: its local piece and gradient (in the compute dtype unless
        ``cast_grad`` is False), in one canonical memory order; ``shard`` says where the piece sits."""
        # a sharded parameter is updated through its local piece (sharing storage with the DTensor)
        grad = sharding.local(param.grad)
        if not grad.is_contiguous():
            # one canonical memory order, so that reductions and matmuls (and hence results) do not depend
            # on the gradient's strides
            grad = grad.contiguous()
        cdtype = storage.compute_dtype(piece)
        if cast_grad:
            grad = grad.to(cdtype)
        work = piece if piece.dtype == cdtype else piece.to(cdtype)
        ps = ParamStep(piece, work, grad, state, state["step"], index, name, group_state, shard=shard)
        if group["stochastic_rounding"]:
            ps.rounding = rounding_generator(piece.device, ps.index, ps.step, shard.start)
        return ps

    @staticmethod
    def _fast_eligible(param: torch.Tensor, state: dict) -> bool:
        # bfloat16 parameters and states (the only ones stochastic rounding touches) are never eligible
        """The fast path updates state in place: every state tensor must be held in the parameter's dtype
        (or be projector indices); quantized or lower-precision state goes through the reference path."""
        return (
            param.dtype in _FAST_DTYPES
            and param.is_contiguous()
            and all(v.dtype in (param.dtype, torch.int64) for v in state.values() if torch.is_tensor(v))
        )

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

    @staticmethod
    def _step_size(group: dict, momentum: MomentumEstimator, step: int) -> float:
        lr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        return lr / momentum.bias_correction(group, step)

    def _reference_update(
        self, ps: ParamStep, group: dict, momentum: MomentumEstimator, second: SecondMomentEstimator
    ) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        if wd != 0 and group["decoupled_weight_decay"]:
            ps.work.mul_(1 - lr * wd)
        numerator = momentum.numerator(ps, group)
        second.update(ps, group)
        update = second.precondition(numerator, ps, group)
        mu = group["update_momentum"]
        if mu > 0:
            if "update_buffer" not in ps.state:
                storage.create(ps.state, "update_buffer", ps.param, group)
            buffer = ps.load("update_buffer", update.dtype)
            buffer.mul_(mu).add_(update)
            ps.store("update_buffer", buffer)
            update = buffer
        ps.work.add_(update, alpha=-self._step_size(group, momentum, ps.step))
        if ps.work is ps.param:
            return
        if ps.rounding is not None and ps.param.dtype == torch.bfloat16:
            stochastic_round_to_bfloat16(ps.work, ps.rounding, out=ps.param)
        else:
            ps.param.copy_(ps.work)

    def _fast_update(
        self, steps: list[ParamStep], group: dict, momentum: MomentumEstimator, second: SecondMomentEstimator
    ) -> None:
        if fused_adam_applies(group, _kind(momentum), _kind(second)):
            fused_adam_step(steps, group)
            return
        lr, wd = group["lr"], group["weight_decay"]
        if wd != 0 and group["decoupled_weight_decay"]:
            torch._foreach_mul_([ps.work for ps in steps], 1 - lr * wd)
        numerators = momentum.numerator_many(steps, group)
        second.update_many(steps, group)
        step_sizes = [self._step_size(group, momentum, ps.step) for ps in steps]
        second.apply_many(steps, numerators, step_sizes, group)
