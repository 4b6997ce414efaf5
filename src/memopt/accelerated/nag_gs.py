"""NAG-GS: semi-implicit Gauss-Seidel discretisation of an accelerated Nesterov-like flow.

Leplat, Merkulov, Katrutsa, Bershatsky, Tsymboi, Oseledets, "NAG-GS: Semi-Implicit, Accelerated and
Robust Stochastic Optimizer", arXiv 2209.14937.

The flow ``x' = v - x``, ``v' = (mu/gamma)(x - v) - grad f(x)/gamma``, ``gamma' = mu - gamma`` is
discretised with step ``alpha`` (``lr``), implicitly in x, then in v with the new x, then in gamma. With
``a = alpha / (1 + alpha)`` one step, gradient ``g`` taken at the current parameters ``x``, is::

    b     = alpha mu / (alpha mu + gamma)                  (the current gamma)
    v     <- (1 - b) v + b x - (b / mu) g                   (b / mu -> alpha / gamma at mu = 0)
    gamma <- (1 - a) gamma + a mu                          (skipped with fixed_gamma=True: "NAG4")
    x     <- (1 - a) x + a v

The published PyTorch class of the authors (``NagGS`` of the naggsopt/naggs experiments, used for their ViT
and GLUE runs) computes the updated gamma but never stores it, so its gamma stays at ``gamma_0``: that class
is ``NAGGS(..., fixed_gamma=True)``, bit for bit (same operations in the same order; tested against a literal
transcription in ``tests/accelerated/test_migration_accel.py``). memopt updates gamma by default, as the paper's
flow does.

``v`` starts as a copy of the parameters. This is the order of the authors' PyTorch optimizer (the one
used for their ViT and GLUE runs), which takes ``b`` with the gamma *before* its update; the authors' JAX
code and notebook use the updated gamma instead. The variants coincide when ``gamma = mu`` (then gamma
never changes).

Eliminating v shows NAG-GS is Polyak's heavy ball with step ``a b / mu`` and momentum ``(1 - a)(1 - b)``;
with ``gamma = mu`` the coefficients are constant: ``lr = alpha^2 / (mu (1 + alpha)^2)`` and
``momentum = (1 + alpha)^-2`` (:func:`heavy_ball_coefficients`, checked against ``torch.optim.SGD`` in the
tests). One extra buffer per parameter, like SGD with momentum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from memopt.accelerated.base import DEFAULT_BLOCK, DEFAULT_STORAGE, AcceleratedBase, storage_options
from memopt.accelerated.closure import evaluate
from memopt.optim.template import PARAM, StateSlot, raw
from memopt.validation import check_non_negative, check_positive

Params = Iterable[torch.Tensor] | Iterable[dict]


def _default_gamma(mu: float, gamma: float | None) -> float:
    return mu if gamma is None else gamma


def optimal_step(mu: float, L: float, gamma: float | None = None) -> float:
    """The NAG-GS step ``alpha`` with the fastest contraction on a quadratic with spectrum in ``[mu, L]``.

    ``alpha_c = (mu + gamma + 2 sqrt(gamma L)) / (L - mu)`` (the authors' notebook; ``gamma`` defaults to
    ``mu``). For ``gamma = mu`` it is exact: every mode of the iteration then has modulus ``1/(1+alpha)``
    for ``alpha <= alpha_c``, and ``alpha_c = 2 sqrt(mu) / (sqrt(L) - sqrt(mu))`` gives the optimal
    heavy-ball rate ``(sqrt(kappa) - 1)/(sqrt(kappa) + 1)``. For ``gamma != mu`` it is close to, but not
    exactly, the optimum. Take a safety factor (e.g. ``0.9 * alpha_c``) when ``L`` is an estimate: the
    stability limit (:func:`stability_limit`) is very close to ``alpha_c`` for large ``kappa``.
    """
    gamma = _default_gamma(mu, gamma)
    if not (0 < mu < L):
        raise ValueError(f"optimal_step needs 0 < mu < L; got mu={mu!r}, L={L!r}.")
    check_positive("gamma", gamma)
    return (mu + gamma + 2 * math.sqrt(gamma * L)) / (L - mu)


def stability_limit(mu: float, L: float, gamma: float | None = None) -> float:
    """The largest stable ``alpha`` for fixed ``gamma`` on a quadratic with spectrum in ``[mu, L]``.

    ``alpha_crit = (mu + gamma + sqrt(gamma^2 - 6 gamma mu + mu^2 + 4 gamma L)) / (L - 2 mu)`` (authors'
    notebook, valid for ``mu < L/2``); for ``gamma = mu``: ``2 sqrt(mu) / (sqrt(L - mu) - sqrt(mu))``.
    """
    gamma = _default_gamma(mu, gamma)
    if not (0 < mu < L / 2):
        raise ValueError(f"stability_limit needs 0 < mu < L/2; got mu={mu!r}, L={L!r}.")
    check_positive("gamma", gamma)
    return (mu + gamma + math.sqrt(gamma**2 - 6 * gamma * mu + mu**2 + 4 * gamma * L)) / (L - 2 * mu)


def heavy_ball_coefficients(alpha: float, mu: float, gamma: float | None = None) -> tuple[float, float]:
    """``(lr, momentum)`` of the heavy-ball step that NAG-GS takes while gamma equals ``gamma``.

    ``lr = alpha^2 / ((1 + alpha)(alpha mu + gamma))`` and ``momentum = (1 - a)(1 - b)`` with
    ``a = alpha/(1+alpha)``, ``b = alpha mu/(alpha mu + gamma)``, in ``torch.optim.SGD`` form
    (``buf = momentum * buf + g; x -= lr * buf``). For ``gamma = mu`` (the default) these are the constant
    ``alpha^2/(mu (1+alpha)^2)`` and ``(1+alpha)^-2``.
    """
    gamma = _default_gamma(mu, gamma)
    a = alpha / (1 + alpha)
    b = alpha * mu / (alpha * mu + gamma)
    return alpha * alpha / ((1 + alpha) * (alpha * mu + gamma)), (1 - a) * (1 - b)


class NAGGS(AcceleratedBase):
    """NAG-GS (Leplat et al., arXiv 2209.14937) with gamma updated each step, or fixed (``fixed_gamma``).

    Args:
        params: parameters or parameter groups.
        lr: the discretisation step ``alpha`` (schedulers change it like any lr).
        mu: the damping target (a strong-convexity estimate); gamma relaxes towards it. ``mu = 0`` needs
            ``fixed_gamma=True`` (otherwise gamma decays to 0 and the step ``alpha^2/((1+alpha) gamma)``
            explodes).
        gamma: the initial damping ``gamma_0`` (> 0).
        fixed_gamma: keep gamma at ``gamma_0`` (the authors' ``NAG4`` variant).
        maximize: maximize the objective.
        state_storage: how ``v`` is held: ``"default"`` (the compute dtype: float32 for 16-bit parameters),
            ``"float32"``, ``"bfloat16"``, ``"8bit"`` or ``"4bit"`` (lossy for an iterate; for memory studies).
        quant_block_size: elements per 8-bit block.
        stochastic_rounding: round a bfloat16 ``v`` and bfloat16 parameters stochastically.

    State per parameter: ``v`` (a copy of the parameter at its first step), ``gamma`` (a float) and
    ``step``. See the module docstring for the update.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 0.05,
        mu: float = 1.0,
        gamma: float = 1.0,
        *,
        fixed_gamma: bool = False,
        maximize: bool = False,
        state_storage: str = DEFAULT_STORAGE,
        quant_block_size: int = DEFAULT_BLOCK,
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(lr=lr, mu=mu, gamma=gamma, fixed_gamma=fixed_gamma, maximize=maximize)
        defaults.update(storage_options(state_storage, quant_block_size, stochastic_rounding))
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict) -> None:
        check_non_negative("lr", group["lr"])
        check_non_negative("mu", group["mu"])
        check_positive("gamma", group["gamma"])
        if group["mu"] == 0 and not group["fixed_gamma"]:
            raise ValueError(
                "Invalid mu: 0 with fixed_gamma=False. gamma relaxes towards mu, so it would decay to 0 and "
                "the step alpha^2/((1+alpha) gamma) would explode. Set mu > 0, or fixed_gamma=True."
            )

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        shape = tuple(param.shape)
        return {"step": raw(0), "gamma": raw(float(group["gamma"])), "v": StateSlot("elementwise", shape, init=PARAM)}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One NAG-GS step from the gradients in ``.grad`` (``closure``, if given, recomputes them first)."""
        loss = evaluate(closure) if closure is not None else None
        for group_index, group in enumerate(self.param_groups):
            alpha, mu = group["lr"], group["mu"]
            a = alpha / (1 + alpha)
            for index, param, name in self._params_with_grad(group, group_index):
                ps = self._begin(param, group, index, name)
                gamma = ps.state["gamma"]
                b = alpha * mu / (alpha * mu + gamma)
                # b / mu as the authors' class computes it (bit for bit), its limit alpha / gamma at mu = 0
                v = ps.load("v", ps.work.dtype)
                v.mul_(1 - b).add_(ps.work, alpha=b).add_(ps.grad, alpha=-(b / mu if mu > 0 else alpha / gamma))
                ps.store("v", v)
                if not group["fixed_gamma"]:
                    ps.state["gamma"] = (1 - a) * gamma + a * mu
                ps.work.mul_(1 - a).add_(v, alpha=a)
                ps.write_back()
        return loss
