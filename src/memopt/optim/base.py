"""The ``torch.optim.Optimizer`` contract that every memopt optimizer keeps, whatever its update rule.

* Parameter groups are completed and validated when they are added (at construction and by
  ``add_param_group``), and a rejected group is not kept: errors come before any state exists.
* Messages name the parameter (``param_names`` from ``memopt.build_optimizer`` or torch's named
  parameters) or its position and shape.
* **One per-parameter contract.** :meth:`MemoptBase._params_with_grad` lists the parameters to update
  (a sparse gradient is an error naming it) and :meth:`MemoptBase._begin` turns one of them into a
  :class:`~memopt.estimators.base.ParamStep`: lazy state creation, ``step += 1``, the local piece of a
  sharded parameter and where it sits (``ShardSpec``), the gradient in the compute dtype (float32 for
  16-bit parameters) and negated for ``maximize``, the work copy, the seeded generator for stochastic
  rounding; the update reads and writes its state through ``ps.load`` / ``ps.store`` (whatever the
  storage format) and ends with ``ps.write_back()``.
* **A declarative state template** (:mod:`memopt.optim.template`): :meth:`MemoptBase.state_template`
  drives state creation, ``prepare_state`` and the check of a loaded checkpoint.
* ``load_state_dict`` keeps every state tensor's dtype exactly as saved and checks the state against what
  the optimizer would create for that parameter (built on the meta device).
* Parameters may be DTensors sharded on dim 0 (FSDP2); their state is then held as DTensors, and
  ``prepare_state`` creates all of it without stepping, as the template that
  ``torch.distributed.checkpoint`` loads into (:mod:`memopt.state.sharding`).
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.optim import Optimizer

from memopt.estimators.base import ParamStep
from memopt.state import quantization, sharding, storage
from memopt.state.formats import flatten_state, sharded_4bit_message, unflatten_state
from memopt.state.rounding import rounding_generator
from memopt.state.template import StateSlot, create_state
from memopt.validation import check_bool, check_choice, check_positive_int

#: group options of every optimizer whose state goes through :mod:`memopt.state.storage`, with defaults
STORAGE_OPTIONS: dict[str, Any] = {
    "state_storage": "default",
    "quant_block_size": quantization.DEFAULT_BLOCK_SIZE,
    "stochastic_rounding": False,
}


def param_name(group: dict, group_index: int, position: int, param: torch.Tensor) -> str:
    """A name for messages: the parameter's name when the group has ``param_names``, else its position."""
    names = group.get("param_names")
    if names is not None and position < len(names):
        return f"parameter {names[position]!r}"
    return f"param_groups[{group_index}]['params'][{position}] (shape {tuple(param.shape)})"


def check_storage_options(group: dict) -> None:
    """Validate ``state_storage``, ``quant_block_size`` and ``stochastic_rounding`` (clear ValueErrors)."""
    check_choice("state_storage", group["state_storage"], storage.STORAGE_CHOICES)
    check_positive_int("quant_block_size", group["quant_block_size"])
    check_bool("stochastic_rounding", group["stochastic_rounding"])


def _names_like_the_others(param_group: dict[str, Any], groups: list[dict]) -> dict[str, Any]:
    """``param_group`` with ``param_names`` exactly when the existing groups have them.

    ``torch.optim.Optimizer.add_param_group`` refuses a group with names next to groups without, and the
    reverse; ``memopt.build_optimizer`` names its groups' parameters (for messages), so a plain
    ``optimizer.add_param_group({"params": [p]})`` would fail. A group added without names gets positional
    ones (``param_groups[3][0]``); names given to an optimizer whose groups have none are dropped.
    """
    if not groups:
        return param_group
    named_before = "param_names" in groups[0]
    params = param_group["params"]
    params = [params] if torch.is_tensor(params) else list(params)
    if named_before and "param_names" not in param_group and not any(isinstance(p, tuple) for p in params):
        index = len(groups)
        return {
            **param_group,
            "params": params,
            "param_names": [f"param_groups[{index}][{j}]" for j in range(len(params))],
        }
    if not named_before and "param_names" in param_group:
        return {k: v for k, v in param_group.items() if k != "param_names"}
    return param_group


@contextlib.contextmanager
def _hooks_suspended(optimizer: Optimizer) -> Iterator[None]:
    """``optimizer``'s load_state_dict hooks set aside: :meth:`MemoptBase.load_state_dict` runs them itself,
    the pre-hooks before anything is read and the post-hooks once the per-parameter state is installed."""
    pre, post = optimizer._optimizer_load_state_dict_pre_hooks, optimizer._optimizer_load_state_dict_post_hooks
    optimizer._optimizer_load_state_dict_pre_hooks, optimizer._optimizer_load_state_dict_post_hooks = {}, {}
    try:
        yield
    finally:
        optimizer._optimizer_load_state_dict_pre_hooks, optimizer._optimizer_load_state_dict_post_hooks = pre, post


class MemoptBase(Optimizer):
    """Base of all memopt optimizers: validated groups, named errors, the per-parameter contract, the state
    template and exact state loading.

    Subclasses override :meth:`_complete_group` (fill defaults), :meth:`_validate_group` (raise
    ``ValueError``), :meth:`state_template` and, for state shared by a whole group, :meth:`group_state_template`.
    """

    #: attributes of ``torch.optim.Optimizer`` itself, which its ``__getstate__`` already handles
    _TORCH_ATTRIBUTES = frozenset({"defaults", "state", "param_groups"})

    def __getstate__(self) -> dict[str, Any]:
        """torch's pickled state (defaults, state, groups) plus every public attribute of the instance (such
        as quasar AGD's ``last_search``), so that ``copy.deepcopy`` and ``pickle`` keep them."""
        extra = {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in self._TORCH_ATTRIBUTES}
        return {**super().__getstate__(), **extra}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(_names_like_the_others(param_group, self.param_groups))
        group = self.param_groups[-1]
        try:
            self._complete_group(group)
            self._validate_group(group, len(self.param_groups) - 1)
        except Exception:
            self.param_groups.pop()
            raise

    def _complete_group(self, group: dict) -> None:
        """Fill in derived or defaulted hyperparameters of a newly added (or loaded) group."""

    def _validate_group(self, group: dict, group_index: int) -> None:
        """Raise ``ValueError`` naming the hyperparameter or parameter if ``group`` is invalid."""
        for position, param in enumerate(group["params"]):
            sharding.check_param(param, param_name(group, group_index, position, param))
            if param.is_complex():
                raise ValueError(
                    f"{param_name(group, group_index, position, param)} is complex; memopt optimizers handle real "
                    "parameters. Optimize torch.view_as_real(param) instead, or use a torch.optim optimizer for it."
                )
        if "state_storage" in group:
            check_storage_options(group)
            if group["state_storage"] == "4bit":
                for position, param in enumerate(group["params"]):
                    if sharding.spec_of(param).sharded:
                        raise ValueError(sharded_4bit_message(param_name(group, group_index, position, param)))

    # ------------------------------------------------------------------------------------------- state
    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """What this optimizer keeps for ``param`` in ``group``: key -> :class:`StateSlot`."""
        raise NotImplementedError(f"{type(self).__name__} does not declare state_template()")

    def group_state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """State shared by the whole ``group``, kept in the state of its first parameter ``param`` and created
        at the group's first step (default: none)."""
        return {}

    def _init_state(self, param: torch.Tensor, state: dict, group: dict) -> None:
        """Create ``param``'s state in ``state`` (at its first step, or as a template)."""
        state.update(create_state(param, group, self.state_template(param, group)))

    def _init_group_state(self, group: dict) -> None:
        """Create the entries of :meth:`group_state_template` that the group's first parameter lacks."""
        if not group["params"]:
            return
        first = group["params"][0]
        state = self.state[first]
        missing = {k: slot for k, slot in self.group_state_template(first, group).items() if k not in state}
        if missing:
            state.update(create_state(first, group, missing))

    def _optional_state_shapes(self, param: torch.Tensor, state: dict, group: dict) -> dict[str, Any]:
        """State keys that a loaded state may hold beyond the template, with their shapes (None: free)."""
        return {}

    def prepare_state(self) -> None:
        """Create every parameter's state (zero tensors, step counters at 0) and every group's shared state
        without stepping, so that ``state_dict()`` lists every entry a checkpoint of this optimizer holds: the
        template that ``torch.distributed.checkpoint.load`` fills in place. State that exists is kept."""
        for group in self.param_groups:
            for param in group["params"]:
                if "step" not in self.state[param]:
                    self._init_state(param, self.state[param], group)
            self._init_group_state(group)

    def _load_hint(self) -> str:
        return (
            f" The checkpoint was saved from a different model or {type(self).__name__} configuration (for "
            "example another shape, option or optimizer); load it into the configuration it was saved from."
        )

    def _check_loaded_state(self, param: torch.Tensor, state: dict, group: dict, name: str) -> None:
        """Raise ``ValueError`` if ``state`` could not have been created by this optimizer for ``param``:
        its keys, tensor shapes and layouts are compared with a meta-device copy of the fresh state."""
        meta = param.detach().to("meta")
        entries: dict = {}
        self._init_state(meta, entries, group)
        fresh = flatten_state(entries)
        optional = dict(self._optional_state_shapes(param, state, group))
        if group["params"] and param is group["params"][0]:  # the group's shared state: there once it stepped
            shared = flatten_state(create_state(meta, group, self.group_state_template(meta, group)))
            optional.update({k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in shared.items()})
        expected: dict[str, Any] = {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in fresh.items()}
        expected.update(optional)
        hint = self._load_hint()
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
            if key in fresh and torch.is_tensor(fresh[key]) and not torch.is_tensor(value):
                raise ValueError(
                    f"Cannot load optimizer state for {name}: state {key!r} has shape {type(value).__name__}, "
                    f"expected {shape}.{hint}"
                )
            if key in fresh and not torch.is_tensor(fresh[key]) and torch.is_tensor(value) and value.ndim != 0:
                raise ValueError(
                    f"Cannot load optimizer state for {name}: state {key!r} must be a scalar, got shape "
                    f"{tuple(value.shape)}.{hint}"
                )
        sharding.check_loaded_layout(fresh, state, name)

    def _template_entries(self, param: torch.Tensor, group: dict) -> dict[str, Any]:
        """The entries this optimizer creates for ``param`` (and its group), on the meta device: the logical
        shapes of states whose checkpoint layout does not keep them (4-bit codes are packed flat)."""
        meta = param.detach().to("meta")
        entries: dict = {}
        if group["params"] and param is group["params"][0]:
            entries.update(create_state(meta, group, self.group_state_template(meta, group)))
        self._init_state(meta, entries, group)
        return entries

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``, keeping every state tensor's dtype exactly as saved.

        ``torch.optim.Optimizer.load_state_dict`` casts floating state to the parameter's dtype (and would
        turn int64 projector indices or float32 accumulators of bfloat16 parameters into something else);
        here the groups are loaded by torch and the per-parameter state by memopt, moved to the
        parameter's device only, checked (in the checkpoint layout) against the state this optimizer would
        create, and turned back into one entry per logical state (:func:`~memopt.state.formats.unflatten_state`).
        """
        state_dict = dict(state_dict)  # shallow copy, as torch's: a pre-hook may change it
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        saved_state = state_dict["state"]
        with _hooks_suspended(self):
            super().load_state_dict({**state_dict, "state": {}})
        params_by_id: dict[Any, tuple[torch.Tensor, dict, str]] = {}
        for group_index, (saved_group, group) in enumerate(zip(state_dict["param_groups"], self.param_groups)):
            self._complete_group(group)
            for position, (pid, param) in enumerate(zip(saved_group["params"], group["params"])):
                params_by_id[pid] = (param, group, param_name(group, group_index, position, param))
        new_state: defaultdict[torch.Tensor, dict] = defaultdict(dict)
        for pid, saved in saved_state.items():
            if pid not in params_by_id:
                raise ValueError(
                    f"Cannot load optimizer state: state for parameter id {pid!r} has no parameter in "
                    "param_groups; the checkpoint does not belong to this optimizer."
                )
            param, group, name = params_by_id[pid]
            state = {k: v.to(device=param.device) if torch.is_tensor(v) else copy.deepcopy(v) for k, v in saved.items()}
            self._check_loaded_state(param, state, group, name)
            new_state[param] = unflatten_state(state, like=self._template_entries(param, group))
        self.state = new_state
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():  # they see the loaded state
            post_hook(self)

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s state dict, each state entry in its checkpoint layout
        (:func:`~memopt.state.formats.flatten_state`: an 8-bit state as its codes, ``<key>_absmax`` and
        ``<key>_qmap``), so that ``torch.load(weights_only=True)`` and ``torch.distributed.checkpoint`` see
        plain tensors, numbers and strings. The tensors are the state's own (DCP loads into them in place)."""
        state_dict = super().state_dict()
        state_dict["state"] = {pid: flatten_state(state) for pid, state in state_dict["state"].items()}
        return state_dict

    # ------------------------------------------------------------------------ the per-parameter contract
    def _step_each(self, closure: Callable[[], Any] | None, update: Callable[[ParamStep, dict], None]) -> Any:
        """A whole step of an optimizer whose update is one parameter at a time: ``closure`` (if given)
        evaluated first, then ``update(ps, group)`` and ``ps.write_back()`` for every parameter with a gradient.
        Returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group_index, group in enumerate(self.param_groups):
            for index, param, name in self._params_with_grad(group, group_index):
                ps = self._begin(param, group, index, name)
                update(ps, group)
                ps.write_back()
        return loss

    def _params_with_grad(
        self, group: dict, group_index: int, only: set[int] | None = None
    ) -> list[tuple[int, torch.Tensor, str]]:
        """``(index, parameter, name)`` of the parameters of ``group`` that have a gradient (and, with ``only``,
        whose ``id`` is in it); ``index`` is the position over all groups (it seeds stochastic rounding). A
        sparse gradient is an error naming it."""
        first = sum(len(g["params"]) for g in self.param_groups[:group_index])
        found = []
        for position, param in enumerate(group["params"]):
            if param.grad is None or (only is not None and id(param) not in only):
                continue
            name = param_name(group, group_index, position, param)
            if param.grad.is_sparse:
                raise ValueError(
                    f"{name} has a sparse gradient; {type(self).__name__} needs dense gradients. Use "
                    "nn.Embedding(sparse=False), or torch.optim.SparseAdam for that parameter."
                )
            found.append((first + position, param, name))
        return found

    def _advance(self, param: torch.Tensor, group: dict) -> tuple[dict, bool]:
        """Create ``param``'s state if it has none, count the step; its local state view, and whether the
        state was created now."""
        fresh = "step" not in self.state[param]
        if fresh:
            self._init_state(param, self.state[param], group)
        self.state[param]["step"] += 1
        return sharding.local_state(param, self.state[param]), fresh

    @staticmethod
    def _param_step(
        param: torch.Tensor,
        state: dict,
        group: dict,
        index: int,
        name: str,
        *,
        grad: torch.Tensor | None = None,
        cast_grad: bool = True,
        maximize: bool = False,
        group_state: dict | None = None,
    ) -> ParamStep:
        """``param``'s inputs to this step: its local piece and gradient (``grad``, default ``.grad``; in the
        compute dtype unless ``cast_grad`` is False, negated with ``maximize``), in one canonical memory
        order; the work copy in the compute dtype; the rounding generator with ``stochastic_rounding``."""
        shard = sharding.spec_of(param)
        piece = sharding.local(param)  # a sharded parameter is updated through its local piece
        grad = sharding.local(param.grad if grad is None else grad)
        if not grad.is_contiguous():
            # one canonical memory order, so that reductions and matmuls (and hence results) do not depend
            # on the gradient's strides
            grad = grad.contiguous()
        cdtype = storage.compute_dtype(piece)
        if cast_grad:
            grad = grad.to(cdtype)
        if maximize:
            grad = -grad
        work = piece if piece.dtype == cdtype else piece.to(cdtype)
        shared = {} if group_state is None else group_state
        ps = ParamStep(piece, work, grad, state, state["step"], index, name, shared, shard=shard)
        if group.get("stochastic_rounding"):
            ps.rounding = rounding_generator(piece.device, ps.index, ps.step, shard.start)
        return ps

    def _begin(
        self, param: torch.Tensor, group: dict, index: int, name: str, *, grad: torch.Tensor | None = None
    ) -> ParamStep:
        """The whole contract for one parameter: state, step count, and its :class:`ParamStep` (gradient in
        the compute dtype, ``maximize`` applied when the group has it)."""
        state, _ = self._advance(param, group)
        return self._param_step(param, state, group, index, name, grad=grad, maximize=group.get("maximize", False))
