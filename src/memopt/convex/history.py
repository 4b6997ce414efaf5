"""The iteration history every solver of :mod:`memopt.convex` returns, and argument checks they share."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


@dataclass
class History:
    """What a solver recorded after each iteration (entry ``k`` = after ``k`` iterations, ``k = 0`` the start).

    Attributes:
        values: the monitored quantity at the solver's *output point* (the objective, or a duality gap for the
            saddle-point solvers); empty when no monitor was given.
        oracle_calls: cumulative number of first-order oracle calls (gradients / subgradients; for the
            saddle-point solvers the gradients of the primal function ``f``).
        iterates: the output points, only when the solver was asked to ``keep_iterates``.
        extra: further per-iteration series by name (e.g. ``"frank_wolfe_gap"``, ``"log_volume"``).
    """

    values: list[float] = field(default_factory=list)
    oracle_calls: list[int] = field(default_factory=list)
    iterates: list[Tensor] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    def record(
        self,
        point: Tensor,
        calls: int,
        monitor: Callable[[Tensor], float | Tensor] | None = None,
        keep: bool = False,
        **extra: float,
    ) -> None:
        """Append one iteration: ``monitor(point)`` (if given), the call count, the point (if ``keep``)."""
        if monitor is not None:
            self.values.append(float(monitor(point)))
        self.oracle_calls.append(int(calls))
        if keep:
            self.iterates.append(point.detach().clone())
        for name, value in extra.items():
            self.extra.setdefault(name, []).append(float(value))

    def gaps(self, optimum: float, floor: float = 0.0) -> list[float]:
        """``values[k] - optimum`` (clamped below at ``floor``)."""
        if not self.values:
            raise ValueError("this history has no values: pass monitor=... (e.g. the objective) to the solver.")
        return [max(v - optimum, floor) for v in self.values]


@dataclass
class Result:
    """A solver's answer ``x`` (and ``y`` for saddle points) with its :class:`History`."""

    x: Tensor
    history: History
    y: Tensor | None = None


def check_positive(name: str, value: float, fix: str = "") -> float:
    """``value`` as a float, or ``ValueError`` naming ``name`` if it is not a finite number > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}. {fix}".strip()) from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}. {fix}".strip())
    return number


def check_nonnegative(name: str, value: float, fix: str = "") -> float:
    """``value`` as a float, or ``ValueError`` naming ``name`` if it is negative or not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}. {fix}".strip()) from None
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}. {fix}".strip())
    return number


def check_steps(n_steps: int) -> int:
    """``n_steps`` if it is an integer >= 1, else ``ValueError``."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}.")
    return n_steps


def check_vector(name: str, x: Tensor) -> Tensor:
    """``x`` detached and cloned if it is a 1-D floating tensor, else ``ValueError`` with the fix."""
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor, got shape {tuple(x.shape)}; pass x.flatten() and reshape in "
                         "your oracles.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}; use x.double().")
    return x.detach().clone()


def step_schedule(name: str, step: float | Callable[[int], float]) -> Callable[[int], float]:
    """A step-size rule ``s -> eta_s`` (``s = 1, 2, ...``) from a positive constant or a callable."""
    if callable(step):
        def checked(s: int) -> float:
            return check_positive(f"{name}({s})", step(s), "The step-size rule must return positive numbers.")

        return checked
    eta = check_positive(name, step, "Use e.g. 1/L for an L-smooth function.")
    return lambda s: eta
