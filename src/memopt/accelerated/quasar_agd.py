"""Accelerated gradient descent for smooth (strongly) quasar-convex functions, and Nesterov's AGD.

Hinder, Sidford & Sohoni, "Near-Optimal Methods for Minimizing Star-Convex Functions and Beyond",
COLT 2020, arXiv 1906.11985.

``f`` is gamma-quasar-convex (``gamma`` in (0, 1]) with respect to a minimiser ``x*`` if
``f(x*) >= f(x) + <grad f(x), x* - x> / gamma`` for all ``x`` (+ ``mu/2 ||x* - x||^2``: strongly). gamma = 1
contains the convex and star-convex functions. With ``L = 1 / lr`` one iteration is::

    alpha_k = BinaryLineSearch(x_k, v_k, b, c_k, eps_k, guess_k)        (a point on the segment v_k -> x_k)
    y_k     = alpha_k x_k + (1 - alpha_k) v_k
    x_{k+1} = y_k - lr * grad f(y_k)
    v_{k+1} = beta v_k + (1 - beta) y_k - eta_k grad f(y_k)

with (``mu = 0``) ``omega_0 = 1``, ``omega_{k+1} = omega_k (sqrt(omega_k^2 + 4) - omega_k) / 2``,
``beta = 1``, ``eta_k = gamma / (L omega_{k+1})``, ``c_k = gamma (1/omega_{k+1} - 1)``, ``b = 0``,
``guess = 1 - omega_{k+1}``, ``eps_k = gamma eps / 2``; or (``mu > 0``, ``kappa = L / mu``)
``beta = 1 - gamma sqrt(mu / L)``, ``eta = 1 / sqrt(mu L)``, ``c = sqrt(kappa)``, ``b = gamma mu / 2``,
``guess = sqrt(kappa) / (1 + sqrt(kappa))``, ``eps = 0``.

The line search (:func:`binary_line_search`) looks along ``g(a) = f(a x + (1 - a) v)`` for ``a`` in [0, 1]
with ``c g(a) + a (g'(a) - a b ||x - v||^2) <= c g(1) + eps``; it tries the guess first. For convex ``f``
the guess always passes (convexity gives ``c g(1) >= c g(a) + c (1 - a) g'(a)`` and ``c (1 - a) = a`` at
``a = c/(1+c)``), so with ``gamma = 1`` the method *is* Nesterov's AGD (:class:`NesterovAGD`, which skips
the search) at the price of one extra function evaluation per step. The complexity is
``O(gamma^-1 L^1/2 R eps^-1/2 log(gamma^-1 eps^-1))`` function and gradient evaluations, against
``Omega(gamma^-1 L^1/2 R eps^-1/2)`` for any deterministic first-order method.

Sources: the paper's abstract (the stored copies of the paper we could search end before its algorithm
boxes); the framework, its parameters and the line-search steps as restated in the project's algorithm
specification (``ALGORITHMS-accel.md``, section 3) from a public PyTorch implementation of the framework
(``agd_framework``, ``binary_search``). Where that restatement leaves a choice we made it: the bisection
starts from ``tau = 1 - g'(1) / (L ||x - v||^2)``, where a gradient step along the segment lands, so
``g(tau) < g(1)`` strictly by L-smoothness and the bisection ends after finitely many halvings (the cap
``max_bisections`` guards against a non-quasar-convex ``f``; then the last point with ``g <= g(tau)`` is
used).

Deterministic and closure-based: ``step(closure)`` calls the closure (which zeroes the gradients,
computes the loss and its gradient at the current parameters and returns the loss) at each point the
line search visits; all parameters move together, so the optimizer has one parameter group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from memopt.accelerated.base import DEFAULT_BLOCK, DEFAULT_STORAGE, AcceleratedBase, storage_options
from memopt.accelerated.closure import evaluate, gradients, missing_closure_error
from memopt.optim.base import STORAGE_OPTIONS
from memopt.optim.template import PARAM, StateSlot, raw
from memopt.state import sharding, storage
from memopt.state.rounding import rounding_generator, stochastic_round_to_bfloat16
from memopt.validation import check_non_negative, check_positive, check_positive_int

Params = Iterable[torch.Tensor] | Iterable[dict]


def next_omega(omega: float) -> float:
    """``omega_{k+1} = omega_k (sqrt(omega_k^2 + 4) - omega_k) / 2`` (so ``omega_{k+1}^2 = (1 - omega_{k+1})
    omega_k^2``: Nesterov's sequence, ``omega_k ~ 2/k``)."""
    return omega * (math.sqrt(omega * omega + 4) - omega) / 2


@dataclass
class LineSearchResult:
    """The chosen ``alpha``, how many points were evaluated, and how (``"trivial"``, ``"guess"``, ``"one"``,
    ``"zero"``, ``"bisection"`` or ``"capped"``)."""

    alpha: float
    evaluations: int
    how: str
    values: dict[float, tuple[float, float]] = field(default_factory=dict)


def binary_line_search(
    phi: Callable[[float], tuple[float, float]],
    *,
    dist2: float,
    L: float,
    b: float,
    c: float,
    eps: float,
    guess: float | None,
    max_bisections: int = 60,
    tiny: float = 1e-30,
) -> LineSearchResult:
    """Find ``a`` in [0, 1] with ``c g(a) + a (g'(a) - a p) <= c g(1) + eps``, ``p = b * dist2``.

    ``phi(a)`` returns ``(g(a), g'(a))`` for ``g(a) = f(a x + (1 - a) v)``; ``dist2 = ||x - v||^2``. Each
    distinct ``a`` is evaluated once (``values`` caches them).
    """
    values: dict[float, tuple[float, float]] = {}

    def at(a: float) -> tuple[float, float]:
        if a not in values:
            values[a] = phi(a)
        return values[a]

    def result(a: float, how: str) -> LineSearchResult:
        return LineSearchResult(a, len(values), how, values)

    if dist2 <= tiny:
        return result(1.0, "trivial")
    p = b * dist2
    g1, dg1 = at(1.0)

    def holds(a: float) -> bool:
        ga, dga = at(a)
        return c * ga + a * (dga - a * p) <= c * g1 + eps

    if guess is not None and holds(guess):
        return result(guess, "guess")
    if dg1 <= eps + p:
        return result(1.0, "one")
    if c == 0 or at(0.0)[0] <= g1 + eps / c:
        return result(0.0, "zero")
    tau = min(1.0, max(0.0, 1.0 - dg1 / (L * dist2)))
    g_tau = at(tau)[0]
    lo, hi, a = 0.0, tau, tau
    for _ in range(max_bisections):
        if holds(a):
            return result(a, "bisection")
        a = (lo + hi) / 2
        if at(a)[0] <= g_tau:
            hi = a
        else:
            lo = a
    return result(hi, "capped")


class QuasarAGD(AcceleratedBase):
    """AGD for smooth gamma-quasar-convex functions (Hinder, Sidford & Sohoni, arXiv 1906.11985).

    Args:
        params: the parameters (one group: the line search moves all of them together).
        lr: ``1/L`` for an ``L``-smooth objective (the gradient step of ``y -> x``).
        gamma: the quasar-convexity constant, in (0, 1].
        mu: strong quasar-convexity (0: the non-strongly quasar-convex method).
        eps: the target accuracy of the non-strong method; the line search tolerance is ``gamma eps / 2``.
        line_search: False skips the search and takes the guess (exactly Nesterov's AGD for gamma = 1).
        max_bisections: cap on bisection steps per line search.
        state_storage: how ``v`` is held: ``"default"`` (the parameter's dtype), ``"float32"``, ``"bfloat16"``
            or ``"8bit"``. The line search reads ``v`` once per step through its format and the step writes
            it back once.
        quant_block_size: elements per 8-bit block.
        stochastic_rounding: round ``v`` (bfloat16 storage) and bfloat16 parameters stochastically.

    State per parameter: ``v``, ``omega`` (a float; identical for all), ``step``. ``self.last_search``
    records the last line search (alpha, evaluations, how it ended). ``step(closure)`` returns the loss at
    ``y_k``, the point whose gradient was used.
    """

    needs_closure: ClassVar[bool] = True

    def __init__(
        self,
        params: Params,
        lr: float = 0.1,
        gamma: float = 1.0,
        mu: float = 0.0,
        *,
        eps: float = 0.0,
        line_search: bool = True,
        max_bisections: int = 60,
        state_storage: str = DEFAULT_STORAGE,
        quant_block_size: int = DEFAULT_BLOCK,
        stochastic_rounding: bool = False,
    ) -> None:
        self.last_search: LineSearchResult | None = None
        defaults = dict(lr=lr, gamma=gamma, mu=mu, eps=eps, line_search=line_search, max_bisections=max_bisections)
        defaults.update(storage_options(state_storage, quant_block_size, stochastic_rounding))
        super().__init__(params, defaults)

    def _validate_group(self, group: dict, group_index: int) -> None:
        if group_index > 0:
            raise ValueError(
                f"{type(self).__name__} moves all parameters together along one line (its line search "
                "evaluates the objective at a x + (1 - a) v for the whole model), so it takes a single parameter "
                "group; pass all parameters in one group."
            )
        super()._validate_group(group, group_index)

    def _complete_group(self, group: dict) -> None:
        # a checkpoint written before the storage options existed: this optimizer's own settings
        for key in STORAGE_OPTIONS:
            group.setdefault(key, self.defaults[key])

    def _check_hyperparameters(self, group: dict) -> None:
        check_positive("lr", group["lr"])
        gamma = group["gamma"]
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not (0 < gamma <= 1):
            raise ValueError(
                f"Invalid gamma: {gamma!r}. gamma is the quasar-convexity constant and must lie in (0, 1] "
                "(1 for convex or star-convex objectives)."
            )
        check_non_negative("mu", group["mu"])
        check_non_negative("eps", group["eps"])
        check_positive_int("max_bisections", group["max_bisections"])
        if group["mu"] * group["lr"] > 1:
            raise ValueError(
                f"Invalid mu: {group['mu']!r} with lr = {group['lr']!r}: mu must not exceed L = 1/lr (mu * lr <= 1)."
            )

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """``v`` starts as a copy of the parameter, by default in its dtype (the line search moves both
        together); ``state_storage`` may hold it in another format."""
        v = StateSlot("elementwise", tuple(param.shape), init=PARAM, default="param")
        return {"step": raw(0), "omega": raw(1.0), "v": v}

    @staticmethod
    def _v_dtype(state: dict, piece: torch.Tensor, group: dict) -> torch.dtype:
        """The dtype a step computes ``v`` in: the parameter's when ``v`` is stored in it and is not rounded
        stochastically (then ``v`` is the stored tensor itself, updated in place, as before storage options
        existed); else the compute dtype (float32 for 16-bit parameters), from which the store rounds or
        quantizes."""
        stored = state["v"]
        if torch.is_tensor(stored) and stored.dtype == piece.dtype and not group["stochastic_rounding"]:
            return piece.dtype
        return storage.compute_dtype(piece)

    def _coefficients(self, group: dict, omega: float) -> dict[str, Any]:
        """beta, eta, c, b, guess, eps of this iteration (and the next omega)."""
        lr, gamma, mu = group["lr"], group["gamma"], group["mu"]
        L = 1.0 / lr
        if mu > 0:
            root = math.sqrt(L / mu)
            return dict(
                omega=omega,
                beta=1 - gamma * math.sqrt(mu / L),
                eta=1 / math.sqrt(mu * L),
                c=root,
                b=gamma * mu / 2,
                guess=root / (1 + root),
                eps=0.0,
            )
        omega = next_omega(omega)
        return dict(
            omega=omega,
            beta=1.0,
            eta=gamma / (L * omega),
            c=gamma * (1 / omega - 1),
            b=0.0,
            guess=1 - omega,
            eps=gamma * group["eps"] / 2,
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is None:
            raise missing_closure_error(type(self).__name__, "evaluates the objective along a line search")
        group = self.param_groups[0]
        if group["lr"] <= 0:  # lr = 1/L: a scheduler may have driven it to 0 (e.g. CosineAnnealingLR's eta_min=0)
            raise ValueError(
                f"Invalid lr: {group['lr']!r} at step {self.state[group['params'][0]].get('step', 0) + 1}. "
                f"{type(self).__name__} takes lr = 1/L > 0 (L: the smoothness constant); a learning-rate "
                "schedule for it must stay above 0, e.g. CosineAnnealingLR(..., eta_min=1e-4)."
            )
        params = group["params"]
        for param in params:
            if "step" not in self.state[param]:
                self._init_state(param, self.state[param], group)
        first = self.state[params[0]]
        k = self._coefficients(group, first["omega"])
        # sharded parameters (FSDP2): every tensor below is this rank's piece, and the sums over the model
        # (||x - v||^2, the slope) are all-reduced, so all ranks take the same line-search decisions
        specs = [sharding.spec_of(p) for p in params]
        pieces = [sharding.local(p) for p in params]
        xs = [p.detach().clone() for p in pieces]
        states = [sharding.local_state(p, self.state[p]) for p in params]
        # v read once through its format (the stored tensor itself by default) and written back once below
        vs = [storage.load(state, "v", self._v_dtype(state, x, group)) for state, x in zip(states, xs)]
        directions = [x - v for x, v in zip(xs, vs)]

        def total(parts: list[torch.Tensor]) -> float:  # a sum over the model, in the order of the parameters
            return float(sum(sharding.reduce_partials(torch.stack(parts), specs).unbind()))

        dist2 = total([(d.double() * d.double()).sum() for d in directions])
        cache: dict[float, tuple[Any, list[torch.Tensor]]] = {}

        def move_to(a: float) -> None:  # y = a x + (1 - a) v, exact at a = 0 and a = 1
            for p, x, v in zip(pieces, xs, vs):
                p.copy_(torch.lerp(v, x.to(v.dtype), a))  # x.to: exact (v is in x's dtype or wider)

        def phi(a: float) -> tuple[float, float]:
            move_to(a)
            loss = evaluate(closure)
            grads = [sharding.local(g) for g in gradients(params)]
            cache[a] = (loss, grads)
            slope = total([(g.double() * d.double()).sum() for g, d in zip(grads, directions)])
            return float(loss), slope

        if group["line_search"]:
            search = binary_line_search(
                phi,
                dist2=dist2,
                L=1.0 / group["lr"],
                b=k["b"],
                c=k["c"],
                eps=k["eps"],
                guess=k["guess"],
                max_bisections=group["max_bisections"],
            )
        else:
            search = LineSearchResult(k["guess"], 0, "no search")
        alpha = search.alpha
        if alpha not in cache:
            phi(alpha)
            search.evaluations += 1
        self.last_search = search
        loss, grads = cache[alpha]
        move_to(alpha)  # the parameters hold y_k
        for index, (param, p, v, g, state, spec) in enumerate(zip(params, pieces, vs, grads, states, specs)):
            state["omega"] = k["omega"]
            state["step"] += 1
            rounding = None
            if group["stochastic_rounding"]:
                rounding = rounding_generator(p.device, index, state["step"], spec.start)
            y = p.detach().clone()
            v.mul_(k["beta"]).add_(y, alpha=1 - k["beta"]).add_(g, alpha=-k["eta"])
            storage.store(state, "v", v, rounding=rounding)  # a no-op for the stored tensor itself
            if rounding is not None and p.dtype == torch.bfloat16:  # x_{k+1} = y - lr * grad f(y)
                stochastic_round_to_bfloat16(y.float().add_(g.float(), alpha=-group["lr"]), rounding, out=p)
            else:
                p.add_(g, alpha=-group["lr"])
            if param.grad is not None:
                sharding.local(param.grad).copy_(g)
        return loss


class NesterovAGD(QuasarAGD):
    """Nesterov's accelerated gradient descent: :class:`QuasarAGD` with ``gamma = 1`` and no line search.

    ``mu = 0``: ``y_k = (1 - omega_{k+1}) x_k + omega_{k+1} v_k``, ``x_{k+1} = y_k - lr grad f(y_k)``,
    ``v_{k+1} = v_k - lr / omega_{k+1} grad f(y_k)`` (the omega sequence of :func:`next_omega`), equal to
    the momentum form ``y_k = x_k + omega_{k+1} (1/omega_k - 1)(x_k - x_{k-1})``, i.e. FISTA's
    ``(t_k - 1)/t_{k+1}`` with ``t_k = 1/omega_k``, ``t_0 = 1``; ``mu > 0``: constant momentum, equal to
    ``y_k = x_k + q (x_k - x_{k-1})`` with ``q = (sqrt(kappa) - 1)/(sqrt(kappa) + 1)``. One closure
    evaluation (at ``y_k``) per step.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 0.1,
        mu: float = 0.0,
        *,
        state_storage: str = DEFAULT_STORAGE,
        quant_block_size: int = DEFAULT_BLOCK,
        stochastic_rounding: bool = False,
    ) -> None:
        super().__init__(
            params, lr=lr, gamma=1.0, mu=mu, line_search=False, state_storage=state_storage,
            quant_block_size=quant_block_size, stochastic_rounding=stochastic_rounding,
        )  # fmt: skip
