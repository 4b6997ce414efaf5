"""Accelerated SGD for least squares (Jain, Kakade, Kidambi, Netrapalli & Sidford, COLT 2018).

Jain et al., "Accelerating Stochastic Gradient Descent for Least Squares Regression", arXiv 1704.08227;
the practical reparameterisation AccSGD of Kidambi, Netrapalli, Jain & Kakade, "On the Insufficiency of
Existing Momentum Schemes for Stochastic Optimization", ICLR 2018 (``rahulkidambi/AccSGD``).

**Four-parameter form** (:class:`FourParameterASGD`). Two iterates: a short-step ``w`` and a long-step
``v``; the gradient is taken at their combination ``y``, which is what the parameters hold::

    y_t     = alpha w_t + (1 - alpha) v_t                    (the parameters; gradient g = grad f(y_t))
    w_{t+1} = y_t - delta g                                  (short step, delta ~ 1/R^2)
    v_{t+1} = beta y_t + (1 - beta) v_t - gamma g            (long step)

Only ``v`` is stored (``w_{t+1}`` is formed and folded into ``y_{t+1}`` at once); ``w_0 = v_0 = x_0``.

**AccSGD form** (:class:`ASGD`), hyperparameters ``lr`` (= delta), ``kappa`` (long/short step ratio),
``xi`` (statistical advantage, ``1 <= xi <= sqrt(kappa)``) and ``small_const`` (``c <= 1``)::

    A = 1 - c^2 xi / kappa,   zeta = c / (c + 1 - A),   long = lr kappa / c
    w_bar <- A w_bar + (1 - A)(theta - long * g)
    theta <- zeta (theta - lr g) + (1 - zeta) w_bar

which is the four-parameter form with ``delta = lr``, ``beta = c^2 xi / kappa``, ``gamma = c xi lr`` and
``alpha = 1 / (1 + c xi / kappa)`` (``w_bar`` is ``v``; :func:`accsgd_to_four_parameter`; equal to 1e-12 in
the tests). Both share one implementation of the update. Note that ``torch.optim.ASGD`` is a different
method (averaged SGD); memopt's ``ASGD`` is *accelerated* SGD.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from memopt.accelerated.base import DEFAULT_BLOCK, DEFAULT_STORAGE, AcceleratedBase, storage_options
from memopt.accelerated.closure import evaluate
from memopt.optim.template import PARAM, StateSlot, raw
from memopt.validation import check_fraction, check_non_negative, check_positive

Params = Iterable[torch.Tensor] | Iterable[dict]


def accsgd_to_four_parameter(lr: float, kappa: float, xi: float, small_const: float) -> dict[str, float]:
    """The ``(alpha, beta, gamma, delta)`` of the four-parameter form that AccSGD's settings give."""
    beta = small_const * small_const * xi / kappa
    return {
        "alpha": small_const / (small_const + beta),
        "beta": beta,
        "gamma": small_const * xi * lr,
        "delta": lr,
    }


class _TwoIterateSGD(AcceleratedBase):
    """The shared update; subclasses turn their group's hyperparameters into (alpha, beta, gamma, delta)."""

    def _coefficients(self, group: dict) -> dict[str, float]:
        raise NotImplementedError

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        return {"step": raw(0), "v": StateSlot("elementwise", tuple(param.shape), init=PARAM)}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step from the gradients in ``.grad`` (``closure``, if given, recomputes them first)."""
        loss = evaluate(closure) if closure is not None else None
        for group_index, group in enumerate(self.param_groups):
            k = self._coefficients(group)
            alpha, beta, gamma, delta = k["alpha"], k["beta"], k["gamma"], k["delta"]
            wd = group["weight_decay"]
            for index, param, name in self._params_with_grad(group, group_index):
                ps = self._begin(param, group, index, name)
                work, grad = ps.work, ps.grad
                if wd != 0:
                    grad = grad.add(work, alpha=wd)
                v = ps.load("v", work.dtype)
                # v_{t+1} = beta y + (1 - beta) v - gamma g;  w_{t+1} = y - delta g (in place of y)
                v.mul_(1 - beta).add_(work, alpha=beta).add_(grad, alpha=-gamma)
                ps.store("v", v)
                work.add_(grad, alpha=-delta)
                # y_{t+1} = alpha w_{t+1} + (1 - alpha) v_{t+1}
                work.mul_(alpha).add_(v, alpha=1 - alpha)
                ps.write_back()
        return loss


class FourParameterASGD(_TwoIterateSGD):
    """Jain et al.'s accelerated SGD in its four-parameter form (module docstring).

    Args:
        params: parameters or parameter groups (they hold the query point ``y``).
        lr: ``delta``, the short step (schedulers scale it).
        alpha: weight of the short-step iterate in the query point, in [0, 1].
        beta: weight of the query point in the long-step iterate, in [0, 1].
        gamma: the long step.
        weight_decay: L2 penalty added to the gradient.
        state_storage: how ``v`` is held: ``"default"`` (the compute dtype: float32 for 16-bit parameters),
            ``"float32"``, ``"bfloat16"``, ``"8bit"`` or ``"4bit"`` (lossy for an iterate; for memory studies).
        quant_block_size: elements per 8-bit block.
        stochastic_rounding: round a bfloat16 ``v`` and bfloat16 parameters stochastically.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 0.01,
        alpha: float = 0.9,
        beta: float = 0.01,
        gamma: float = 0.1,
        *,
        weight_decay: float = 0.0,
        state_storage: str = DEFAULT_STORAGE,
        quant_block_size: int = DEFAULT_BLOCK,
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(lr=lr, alpha=alpha, beta=beta, gamma=gamma, weight_decay=weight_decay)
        defaults.update(storage_options(state_storage, quant_block_size, stochastic_rounding))
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict) -> None:
        check_non_negative("lr", group["lr"])
        check_fraction("alpha", group["alpha"], allow_one=True)
        check_fraction("beta", group["beta"], allow_one=True)
        check_non_negative("gamma", group["gamma"])
        check_non_negative("weight_decay", group["weight_decay"])

    def _coefficients(self, group: dict) -> dict[str, float]:
        return {"alpha": group["alpha"], "beta": group["beta"], "gamma": group["gamma"], "delta": group["lr"]}


class ASGD(_TwoIterateSGD):
    """Accelerated SGD in the practical AccSGD parameterisation (Kidambi et al., ICLR 2018).

    Args:
        params: parameters or parameter groups.
        lr: the short step ``delta``.
        kappa: long step / short step ratio (default 1000; the authors suggest 1e2-1e3 for easy tasks,
            >= 1e4 for deep ResNets).
        xi: statistical advantage, ``1 <= xi <= sqrt(kappa)`` (default 10).
        small_const: ``c`` in (0, 1] (default 0.7).
        weight_decay: L2 penalty added to the gradient.
        state_storage: how ``v`` is held: ``"default"`` (the compute dtype: float32 for 16-bit parameters),
            ``"float32"``, ``"bfloat16"``, ``"8bit"`` or ``"4bit"`` (lossy for an iterate; for memory studies).
        quant_block_size: elements per 8-bit block.
        stochastic_rounding: round a bfloat16 ``v`` and bfloat16 parameters stochastically.

    Equal to :class:`FourParameterASGD` with :func:`accsgd_to_four_parameter` (module docstring).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 0.01,
        kappa: float = 1000.0,
        xi: float = 10.0,
        small_const: float = 0.7,
        *,
        weight_decay: float = 0.0,
        state_storage: str = DEFAULT_STORAGE,
        quant_block_size: int = DEFAULT_BLOCK,
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(lr=lr, kappa=kappa, xi=xi, small_const=small_const, weight_decay=weight_decay)
        defaults.update(storage_options(state_storage, quant_block_size, stochastic_rounding))
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict) -> None:
        check_non_negative("lr", group["lr"])
        check_positive("kappa", group["kappa"])
        check_positive("xi", group["xi"])
        c = group["small_const"]
        check_positive("small_const", c)
        if c > 1:
            raise ValueError(f"Invalid small_const: {c!r}. small_const (c) must lie in (0, 1]; the default is 0.7.")
        check_non_negative("weight_decay", group["weight_decay"])
        if c * c * group["xi"] > group["kappa"]:
            raise ValueError(
                f"Invalid xi: {group['xi']!r} with kappa={group['kappa']!r}, small_const={c!r}: the long-step "
                "weight c^2 xi / kappa must be <= 1. Use xi <= sqrt(kappa) (the method's assumption) or a larger kappa."
            )

    def _coefficients(self, group: dict) -> dict[str, float]:
        return accsgd_to_four_parameter(group["lr"], group["kappa"], group["xi"], group["small_const"])
