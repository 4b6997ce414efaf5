"""Estimators by name: ``@register_estimator("ema")`` on a class makes it a choice of ``momentum_type`` (a
:class:`~.base.MomentumEstimator`) or ``second_moment_type`` (a :class:`~.base.SecondMomentEstimator`).

A new estimator is one module with one decorated class; :mod:`memopt.estimators` imports every estimator
module, so registration happens on ``import memopt``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from memopt.estimators.base import Estimator, MomentumEstimator, SecondMomentEstimator

#: ``momentum_type`` name -> the (stateless) estimator instance
MOMENTUM: dict[str, MomentumEstimator] = {}
#: ``second_moment_type`` name -> the (stateless) estimator instance
SECOND_MOMENT: dict[str, SecondMomentEstimator] = {}

E = TypeVar("E", bound=type[Estimator])


def register_estimator(name: str) -> Callable[[E], E]:
    """Class decorator: register one instance of the estimator under ``name`` and set its ``name``."""

    def register(cls: E) -> E:
        if issubclass(cls, MomentumEstimator):
            table: dict = MOMENTUM
        elif issubclass(cls, SecondMomentEstimator):
            table = SECOND_MOMENT
        else:
            raise TypeError(f"{cls.__name__} is neither a MomentumEstimator nor a SecondMomentEstimator.")
        if name in table:
            raise ValueError(f"An estimator named {name!r} is already registered ({type(table[name]).__name__}).")
        cls.name = name
        table[name] = cls()
        return cls

    return register
