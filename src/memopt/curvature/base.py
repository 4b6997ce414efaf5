"""The loop that the PSGD optimizers share: momentum, the fitting pair, the update schedule, the step.

PSGD (Xi-Lin Li, "Preconditioned Stochastic Gradient Descent", arXiv 1512.04202; Pooladzandi & Li,
"Curvature-Informed SGD via General Purpose Lie-Group Preconditioners", arXiv 2402.04553) keeps a
preconditioner ``P = Q^T Q`` with ``Q`` on a matrix Lie group and fits it online to pairs ``(v, h)`` by
minimising ``E[h^T P h + v^T P^-1 v]`` with multiplicative (group) steps ``Q <- (I - mu grad) Q`` whose step
``mu = precond_lr / ||.||`` is normalised. The pair comes in two kinds (``preconditioner_type``):

* ``"whitening"`` (default, no closure): ``v ~ N(0, I)`` and ``h`` = the (momentum of the) gradient, damped as
  ``h + sqrt(eps_f32) mean|h| v`` (kron-torch). The optimum ``P^-2 = E[h h^T]`` whitens the gradients (the
  Adam/Shampoo family); one gradient per step, like any optimizer.
* ``"newton"``: ``v ~ N(0, I)`` and ``h = H v``, an exact Hessian-vector product. The optimum is
  ``P = |H|^-1`` (Newton's step for convex losses). ``step(closure)`` must get a closure whose
  ``backward`` keeps the graph (``loss.backward(create_graph=True)``); the product is one more backward pass
  through the gradients (``torch.autograd.grad(grads, params, v)``).

One step, per parameter (the kron-torch order, Walters, Pooladzandi & Li, ``kron_torch.Kron``)::

    m <- b1 m + (1 - b1) g;   m_hat = m / (1 - b1^t)               (b1 = 0: m_hat = g)
    if the preconditioner is due: fit Q to (v, h)                    (h = m_hat, or g, or H v)
    u = P m_hat;   u <- u min(1, clip_update_rms / RMS(u))          (clip_update_rms=None: no clipping)
    u <- u + weight_decay x   (tensors of 2 or more dims);   x <- x - lr u

The preconditioner is due on a deterministic schedule: a counter per parameter counts the steps since its
last fit, and the fit runs when ``counter >= 1/p`` (kron-torch), where ``p`` is the float
``preconditioner_update_probability`` or, for ``None``, kron-torch's schedule ``p(n) = clip(exp(-0.001
(n - 500)), 0.03, 1)`` over the step index ``n`` (every step for the first 500, every 34th from step ~4000).
The random vectors come from a generator seeded by the parameter's index and step, so a resumed run draws
exactly what the uninterrupted one draws (psgd-torch draws from torch's global generator; kron-torch too).

Differences from psgd-torch's classes, on purpose: one preconditioner per parameter (psgd-torch's LRA and
diagonal classes fit one over all parameters concatenated), a deterministic update schedule instead of a
Bernoulli draw per step, momentum with bias correction and update RMS clipping as in kron-torch (psgd-torch:
no bias correction, optional global-norm clipping), the ``"2nd"`` step normaliser only (psgd-torch's default
since 2024), no finite-difference Hessian-vector product.

FSDP2: the fits contract the whole gradient tensor (a Kronecker factor sums over every other dimension; the
low-rank and diagonal normalisers take a maximum over all entries), so a parameter sharded across ranks
(a ``DTensor``) is refused at construction with a ``ValueError``; train such models with DDP, or leave the
parameters unsharded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from memopt.accelerated.closure import evaluate, missing_closure_error
from memopt.estimators.base import ParamStep
from memopt.optim.base import MemoptBase, check_storage_options, param_name
from memopt.optim.template import StateSlot, like_param, raw
from memopt.state import storage
from memopt.validation import check_choice, check_non_negative, check_positive

Params = Iterable[torch.Tensor] | Iterable[dict]

PRECONDITIONER_TYPES = ("whitening", "newton")
#: kron-torch's update-probability schedule: max and min probability, decay per step, flat start (steps)
SCHEDULE = (1.0, 0.03, 0.001, 500.0)
#: probability that a fit first rebalances the scales of the factors (psgd-torch and kron-torch)
BALANCE_PROBABILITY = 0.01


def update_probability(step_index: int, fixed: float | None) -> torch.Tensor:
    """The preconditioner update probability at 0-based step ``step_index`` (float32, as kron-torch)."""
    if fixed is not None:
        return torch.tensor(fixed, dtype=torch.float32)
    high, low, decay, flat = (torch.tensor(x, dtype=torch.float32) for x in SCHEDULE)
    n = torch.tensor(float(step_index), dtype=torch.float32)
    return (high * torch.exp(-decay * (n - flat))).clamp(min=low, max=high)


def psgd_generator(device: torch.device, index: int, step: int) -> torch.Generator:
    """The generator of parameter ``index``'s random vectors at ``step``, seeded by both (exact resume)."""
    return torch.Generator(device=device).manual_seed(((index << 32) ^ step ^ (0x5053_4744 << 20)) % (1 << 63))


def psgd_defaults(arguments: dict[str, Any]) -> dict[str, Any]:
    """An optimizer's ``defaults`` from its ``__init__``'s ``locals()``: every argument but ``params``."""
    return {k: v for k, v in arguments.items() if k not in ("self", "params", "__class__")}


def sharded_message(name: str) -> str:
    return (
        f"{name} is an FSDP2 shard (DTensor); PSGD fits its preconditioner to the whole gradient tensor (a "
        "Kronecker factor sums over every other dimension, the low-rank and diagonal step sizes take a maximum "
        "over all entries), which a shard does not hold. Train with DDP or leave this parameter unsharded."
    )


class PSGDBase(MemoptBase):
    """The shared PSGD loop (module docstring). Subclasses define the preconditioner's slots
    (:meth:`preconditioner_template`), how it starts (:meth:`init_preconditioner`), its fit
    (:meth:`fit_preconditioner`) and its product with a tensor (:meth:`precondition`); each works on the
    parameter viewed in :meth:`fit_shape`."""

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)

    @property
    def needs_closure(self) -> bool:
        """Whether ``step`` needs a closure: a group fits Newton-type preconditioners (Hessian-vector products)."""
        return any(group["preconditioner_type"] == "newton" for group in self.param_groups)

    # ----------------------------------------------------------------------------------------- checks
    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        for position, param in enumerate(group["params"]):
            if isinstance(param, DTensor):
                raise ValueError(sharded_message(param_name(group, group_index, position, param)))
        check_non_negative("lr", group["lr"])
        b1 = group["b1"]
        if not isinstance(b1, (int, float)) or isinstance(b1, bool) or not 0 <= b1 < 1:
            raise ValueError(f"Invalid b1: {b1!r}. b1 (momentum) must lie in [0, 1).")
        check_non_negative("weight_decay", group["weight_decay"])
        check_positive("precond_lr", group["precond_lr"])
        if group["precond_init_scale"] is not None:
            check_positive("precond_init_scale", group["precond_init_scale"])
        check_choice("preconditioner_type", group["preconditioner_type"], PRECONDITIONER_TYPES)
        p = group["preconditioner_update_probability"]
        if p is not None and (not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 < p <= 1):
            raise ValueError(
                f"Invalid preconditioner_update_probability: {p!r}. Give a number in (0, 1], or None for the "
                "schedule that decays from 1 to 0.03 after step 500."
            )
        if group["clip_update_rms"] is not None:
            check_positive("clip_update_rms", group["clip_update_rms"])
        check_storage_options(group)
        self._check_preconditioner_options(group)

    def _check_preconditioner_options(self, group: dict) -> None:
        """Raise ``ValueError`` for a bad option of the subclass's preconditioner."""

    # ------------------------------------------------------------------------------------------ state
    def fit_shape(self, param: torch.Tensor, group: dict) -> tuple[int, ...]:
        """The shape the preconditioner sees the parameter in (default: flat)."""
        return (param.numel(),)

    def preconditioner_template(self, shape: tuple[int, ...], group: dict, dtype: torch.dtype) -> dict[str, StateSlot]:
        raise NotImplementedError

    def init_preconditioner(
        self, state: dict, shape: tuple[int, ...], group: dict, generator: torch.Generator, scale: float
    ) -> None:
        """Set the preconditioner's state at the parameter's first step (the template creates zeros): ``Q`` of
        scale ``scale``."""
        raise NotImplementedError

    def fit_preconditioner(
        self, state: dict, v: torch.Tensor, h: torch.Tensor, group: dict, generator: torch.Generator, balance: bool
    ) -> None:
        """One fit of the preconditioner to the pair ``(v, h)`` (both in :meth:`fit_shape`), in place."""
        raise NotImplementedError

    def precondition(self, state: dict, g: torch.Tensor, group: dict) -> torch.Tensor:
        """``P g`` for ``g`` in :meth:`fit_shape`."""
        raise NotImplementedError

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """``step``, ``precond_counter`` (steps since the last fit), ``momentum_buffer`` when ``b1 > 0``
        (any ``state_storage``) and the preconditioner's slots in the compute dtype (float32 for 16-bit)."""
        slots: dict[str, StateSlot] = {"step": raw(0), "precond_counter": raw(0)}
        if group["b1"] > 0:
            slots["momentum_buffer"] = like_param(param)
        dtype = storage.compute_dtype(param)
        slots.update(self.preconditioner_template(self.fit_shape(param, group), group, dtype))
        return slots

    # ------------------------------------------------------------------------------------- randomness
    def _random_normal(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``v ~ N(0, I)`` shaped like ``like`` (tests replace it to share draws with a reference), drawn in
        float32 whatever ``like``'s dtype, so that a float64 model sees the draws of a float32 one."""
        return torch.randn(like.shape, generator=generator, dtype=torch.float32, device=like.device).to(like.dtype)

    def _balance_due(self, step: int) -> bool:
        """Whether the fit at ``step`` first rebalances the factors (probability 0.01, the same for every
        parameter of the step)."""
        generator = torch.Generator().manual_seed((step ^ (0x42414C << 24)) % (1 << 63))
        return bool(torch.rand((), generator=generator) < BALANCE_PROBABILITY)

    # ------------------------------------------------------------------------------------------- step
    def _due(self, ps: ParamStep, group: dict) -> bool:
        counter = ps.state["precond_counter"] + 1
        probability = update_probability(ps.step - 1, group["preconditioner_update_probability"])
        due = ps.step == 1 or bool(counter >= 1 / probability)  # the first step sets the preconditioner up
        ps.state["precond_counter"] = 0 if due else counter
        return due

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One PSGD step from the gradients in ``.grad``. Newton-type groups need ``closure`` (it must call
        ``loss.backward(create_graph=True)``); for whitening groups a closure only recomputes the gradients."""
        newton = self.needs_closure
        if newton and closure is None:
            raise missing_closure_error(
                type(self).__name__,
                "fits its preconditioner to Hessian-vector products (preconditioner_type='newton'), and the "
                "closure must call loss.backward(create_graph=True)",
            )
        loss = evaluate(closure) if closure is not None else None
        pending: list[tuple[ParamStep, dict, torch.Tensor, bool, torch.Generator]] = []
        for group_index, group in enumerate(self.param_groups):
            for index, param, name in self._params_with_grad(group, group_index):
                ps = self._begin(param, group, index, name)
                if ps.grad.requires_grad:  # a graph kept for the Hessian-vector product
                    ps.grad = ps.grad.detach()
                generator = psgd_generator(param.device, index, ps.step)
                pending.append((ps, group, param, self._due(ps, group), generator))
        hvps = self._hessian_vector_products(pending) if newton else {}
        for ps, group, param, due, generator in pending:
            self._update(ps, group, due, generator, hvps.get(id(param)))
        return loss

    def _hessian_vector_products(self, pending: list) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """``id(param) -> (v, H v)`` for the Newton-type parameters whose fit is due, by one backward pass
        through the gradients that the closure's ``backward(create_graph=True)`` left."""
        chosen = [
            (ps, param, generator)
            for ps, group, param, due, generator in pending
            if due and group["preconditioner_type"] == "newton"
        ]
        if not chosen:
            return {}
        for ps, param, _ in chosen:
            if param.grad.grad_fn is None:
                raise ValueError(
                    f"{ps.name} has a gradient without a graph, so no Hessian-vector product can be taken: the "
                    "closure of a preconditioner_type='newton' PSGD optimizer must call "
                    "loss.backward(create_graph=True)."
                )
        vs = [self._random_normal(param.grad, generator) for _, param, generator in chosen]
        with torch.enable_grad():
            hs = torch.autograd.grad(
                [param.grad for _, param, _ in chosen], [param for _, param, _ in chosen], vs, allow_unused=True
            )
        return {
            id(param): (v, torch.zeros_like(v) if h is None else h.detach())
            for (_, param, _), v, h in zip(chosen, vs, hs)
        }

    @staticmethod
    def _init_scale(v: torch.Tensor, h: torch.Tensor, group: dict) -> float:
        """``precond_init_scale``, or for None psgd-torch's automatic scale from the first pair:
        ``(sum v^2 / sum h^2)^(1/4)`` (Newton), ``(numel / sum h^2)^(1/4)`` (whitening), so that the first
        preconditioned gradient has about unit size (1 where ``h`` is all zeros)."""
        if group["precond_init_scale"] is not None:
            return float(group["precond_init_scale"])
        top = v.square().sum() if group["preconditioner_type"] == "newton" else torch.tensor(float(h.numel()))
        bottom = h.square().sum()
        return float((top / bottom) ** 0.25) if bottom > 0 else 1.0

    def _update(
        self,
        ps: ParamStep,
        group: dict,
        due: bool,
        generator: torch.Generator,
        pair: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        shape = self.fit_shape(ps.param, group)
        pdtype = storage.compute_dtype(ps.param)
        b1 = group["b1"]
        grad = ps.grad.reshape(shape)
        if b1 > 0:
            buffer = ps.load("momentum_buffer", ps.grad.dtype)
            buffer.mul_(b1).add_(ps.grad, alpha=1 - b1)
            ps.store("momentum_buffer", buffer)
            momentum = (buffer / (1 - b1**ps.step)).reshape(shape).to(pdtype)
        else:
            momentum = grad.to(pdtype, copy=True)
        if due:
            if pair is not None:  # Newton type: (v, H v)
                v, h = (t.reshape(shape).to(pdtype) for t in pair)
            else:
                # the damping goes into the momentum in place, so that this step's update sees it too (kron-torch)
                h = momentum if group["momentum_into_precond_update"] else grad.to(pdtype, copy=True)
                v = self._random_normal(h, generator)
            if ps.step == 1:
                self.init_preconditioner(ps.state, shape, group, generator, self._init_scale(v, h, group))
            if pair is None:
                h.add_(v, alpha=float(torch.finfo(torch.float32).eps ** 0.5 * h.abs().mean()))
            self.fit_preconditioner(ps.state, v, h, group, generator, self._balance_due(ps.step))
        update = self.precondition(ps.state, momentum, group)
        if group["clip_update_rms"] is not None:
            rms = update.square().mean().sqrt()
            update.mul_(torch.clamp(group["clip_update_rms"] / (rms + 1e-12), max=1.0))
        update = update.reshape(ps.work.shape).to(ps.work.dtype)
        if group["weight_decay"] != 0 and ps.work.dim() >= 2:
            update.add_(ps.work, alpha=group["weight_decay"])
        ps.work.add_(update, alpha=-group["lr"])
        ps.write_back()
