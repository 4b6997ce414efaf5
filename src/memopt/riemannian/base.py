"""What the Riemannian optimizers share on top of :class:`~memopt.optim.base.MemoptBase`.

A parameter's manifold is ``param.manifold`` (a :class:`memopt.manifolds.ManifoldParameter`); any other
parameter is Euclidean and gets the Euclidean update (:data:`FLAT`). The optimizers only use the manifold
interface of :mod:`memopt.manifolds.base` (``egrad2rgrad``, ``component_inner`` / ``component_shape`` /
``expand_components``, ``retr``, ``retr_transp``, ``projx``, ``proju``, ``check_shape``, ``check_point``).

Where memopt differs from geoopt 0.5.1 (``geoopt.optim``), on purpose:

* **Points are checked** at a parameter's first step: a point off its manifold (e.g. outside the Poincaré
  ball, where the metric factor ``1 - c||x||^2`` is negative and geoopt's clamped ``lambda_x`` returns
  garbage or NaN, geoopt issue #227) is a ``ValueError`` naming the parameter and the fix; the ball's
  retraction projects every step, so no point drifts out afterwards.
* **The step counter is per parameter and counted once per step** (geoopt's RiemannianAdam once counted
  a group counter twice per parameter, issue #164); ``stabilize=N`` re-projects each parameter (and its
  momentum onto the tangent space) every ``N`` of *its own* steps, where geoopt stabilises a whole group.
* **The second moment is stored at the factor's shape** (one scalar per point of a ball, per Stiefel
  frame), not broadcast to the parameter's shape: ``exp_avg_sq`` of an ``N x d`` Poincaré embedding is
  ``N x 1``.
* **Riemannian SGD's momentum starts from the Riemannian gradient** (geoopt starts it from the raw
  Euclidean gradient, mixing the two scales on the first step).
* A wrong shape (an ``n < p`` Stiefel frame) is an error at construction, naming the parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch.distributed.tensor import DTensor

from memopt.accelerated.closure import evaluate
from memopt.estimators.base import ParamStep
from memopt.manifolds.euclidean import Euclidean
from memopt.optim.base import MemoptBase, param_name
from memopt.optim.template import StateSlot
from memopt.validation import check_non_negative, check_positive_int

#: the manifold of a plain parameter
FLAT = Euclidean()


def manifold_of(param: torch.Tensor) -> Any:
    """``param.manifold`` for a ManifoldParameter, else :data:`FLAT`."""
    manifold = getattr(param, "manifold", None)
    return FLAT if manifold is None else manifold


def off_manifold_error(name: str, manifold: Any, problem: str) -> ValueError:
    """The error for a parameter whose values are not points of its manifold."""
    return ValueError(
        f"{name} is not on its manifold {manifold!r}: {problem}. Project it before optimizing, e.g. "
        "`with torch.no_grad(): p.copy_(p.manifold.projx(p))`, or create it with "
        "ManifoldParameter(data, manifold, project=True)."
    )


class RiemannianBase(MemoptBase):
    """Base of the Riemannian optimizers: manifold lookup and checks, the step loop, stabilisation.

    Subclasses define ``_check_hyperparameters(group)``, ``_state_slots(param, group, manifold)`` (the
    state besides ``step``), ``_update(ps, group, manifold, rgrad)`` (writes the new point into ``ps.work``
    and stores the state) and :attr:`momentum_key` (the tangent-vector state re-projected by
    ``stabilize``; None if none).
    """

    momentum_key: ClassVar[str | None] = None

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._loading_manifold: Any = None
        super().__init__(params, defaults)

    # ----------------------------------------------------------------------------------- validation
    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        check_non_negative("lr", group["lr"])
        check_non_negative("weight_decay", group["weight_decay"])
        if group["stabilize"] is not None:
            check_positive_int("stabilize", group["stabilize"])
        self._check_hyperparameters(group)
        for position, param in enumerate(group["params"]):
            manifold = manifold_of(param)
            if manifold is FLAT:
                continue
            name = param_name(group, group_index, position, param)
            if isinstance(param, DTensor):
                raise ValueError(
                    f"{name} is a sharded DTensor on {manifold!r}; manifold operations need whole points. "
                    "Keep manifold parameters out of fully_shard (e.g. ignored_params) or replicate them."
                )
            problem = manifold.check_shape(param.shape)
            if problem is not None:
                raise ValueError(f"{name} cannot hold points of {manifold!r}: {problem}.")

    def _check_hyperparameters(self, group: dict) -> None:
        """Raise ``ValueError`` naming the hyperparameter, its value and the fix."""

    # ---------------------------------------------------------------------------------------- state
    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        manifold = self._loading_manifold if self._loading_manifold is not None else manifold_of(param)
        return {"step": StateSlot("raw", init=0), **self._state_slots(param, group, manifold)}

    def _state_slots(self, param: torch.Tensor, group: dict, manifold: Any) -> dict[str, StateSlot]:
        raise NotImplementedError

    @staticmethod
    def _component_slot(param: torch.Tensor, manifold: Any, init: float = 0.0) -> StateSlot:
        """A non-negative per-factor accumulator: elementwise for Euclidean parameters, else one value per
        point (a ``reduced`` slot: float32 for 16-bit parameters)."""
        shape = manifold.component_shape(param.shape)
        kind = "elementwise" if shape == tuple(param.shape) else "reduced"
        return StateSlot(kind, shape, init=init, non_negative=True)

    def _check_loaded_state(self, param: torch.Tensor, state: dict, group: dict, name: str) -> None:
        # the base builds the expected state from a meta copy of ``param``, which has lost its manifold
        self._loading_manifold = manifold_of(param)
        try:
            super()._check_loaded_state(param, state, group, name)
        finally:
            self._loading_manifold = None

    # ----------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step from the gradients in ``.grad`` (``closure``, if given, recomputes them first)."""
        loss = evaluate(closure) if closure is not None else None
        for group_index, group in enumerate(self.param_groups):
            for index, param, name in self._params_with_grad(group, group_index):
                manifold = manifold_of(param)
                if "step" not in self.state[param]:
                    problem = manifold.check_point(param.detach())
                    if problem is not None:
                        raise off_manifold_error(name, manifold, problem)
                ps = self._begin(param, group, index, name)
                grad = ps.grad
                if group["weight_decay"]:
                    grad = grad.add(ps.work, alpha=group["weight_decay"])
                self._update(ps, group, manifold, manifold.egrad2rgrad(ps.work, grad))
                if group["stabilize"] is not None and ps.step % group["stabilize"] == 0:
                    self._stabilize(ps, manifold)
                ps.write_back()
        return loss

    def _update(self, ps: ParamStep, group: dict, manifold: Any, rgrad: torch.Tensor) -> None:
        raise NotImplementedError

    def _stabilize(self, ps: ParamStep, manifold: Any) -> None:
        """Re-project the point onto the manifold and the momentum onto the new tangent space."""
        ps.work.copy_(manifold.projx(ps.work))
        if self.momentum_key is not None and self.momentum_key in ps.state:
            momentum = ps.load(self.momentum_key, ps.work.dtype)
            ps.store(self.momentum_key, manifold.proju(ps.work, momentum))

    def stabilize(self) -> None:
        """Re-project every parameter that has state onto its manifold (and its momentum), now."""
        with torch.no_grad():
            for group_index, group in enumerate(self.param_groups):
                for position, param in enumerate(group["params"]):
                    if "step" not in self.state[param]:
                        continue
                    name = param_name(group, group_index, position, param)
                    ps = self._param_step(param, self.state[param], group, position, name, grad=torch.zeros_like(param))
                    self._stabilize(ps, manifold_of(param))
                    ps.write_back()
