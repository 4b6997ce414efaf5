"""Hyperparameter sweeps for ``memopt compare --tune``: grids, and the choice of the best value.

``--tune lr,plain_lr`` tunes the listed hyperparameters of every optimizer (``LABEL:KEY``: of that one
alone) one after the other (a
coordinate search: ``lr`` over its grid with the other values fixed, then ``plain_lr`` at the chosen
``lr``). Each grid point is one short run with the same token budget for every optimizer; the value with
the lowest final validation loss wins (a run that diverges counts as infinitely bad). A choice at either end
of its grid is flagged: the optimum may lie outside, so the grid should be widened.

Grids (``--grid [OPTIMIZER:]KEY=SPEC``, repeatable):

* ``LOW:HIGH:N``: N log-spaced values from LOW to HIGH (numbers);
* ``V1;V2;...``: the values themselves, Python literals (``--grid "betas=(0.9,0.95);(0.9,0.999)"``).

Without ``--grid`` a numeric hyperparameter is swept over ``--grid-points`` log-spaced values spanning
``--grid-span`` decades on each side of its current value (default 5 points, 1 decade: x0.1, x0.316, x1,
x3.16, x10); ``betas`` over :data:`DEFAULT_BETAS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from memopt.harness.train.errors import ConfigError

DEFAULT_POINTS = 5
DEFAULT_SPAN = 1.0
#: the ``betas`` swept without a ``--grid``: (beta1, beta2) pairs, in the order of beta2
DEFAULT_BETAS = [(0.9, 0.95), (0.9, 0.99), (0.9, 0.999)]


def log_grid(low: float, high: float, points: int) -> list[float]:
    """``points`` values from ``low`` to ``high``, evenly spaced in log scale, rounded to 4 significant digits."""
    if not (low > 0 and high > 0) or points < 1:
        raise ValueError(f"a log grid needs positive ends and at least one point, got {low}, {high}, {points}")
    if points == 1:
        return [float(f"{low:.4g}")]
    step = (math.log10(high) - math.log10(low)) / (points - 1)
    return [float(f"{10 ** (math.log10(low) + i * step):.4g}") for i in range(points)]


def default_grid(key: str, center: Any, points: int = DEFAULT_POINTS, span: float = DEFAULT_SPAN) -> list[Any]:
    """The grid of ``key`` around its current value ``center`` when no ``--grid`` is given.

    Raises:
        ConfigError: ``key`` is not numeric and has no default grid.
    """
    if key == "betas":
        return list(DEFAULT_BETAS)
    if isinstance(center, bool) or not isinstance(center, int | float) or center <= 0:
        raise ConfigError(
            f"--tune {key}: no default grid for {key}={center!r} (only positive numbers and betas have one); "
            f"give one with --grid {key}=LOW:HIGH:N or --grid '{key}=V1;V2;V3'."
        )
    if points < 1 or span <= 0:
        raise ConfigError(f"--grid-points {points} / --grid-span {span}: need at least 1 point and a positive span.")
    return log_grid(center * 10**-span, center * 10**span, points)


@dataclass(frozen=True)
class GridSpec:
    """One ``--grid`` item: the values of ``key`` for the optimizer ``scope`` (None: every optimizer)."""

    scope: str | None
    key: str
    values: list[Any]


def parse_grid(item: str) -> GridSpec:
    """Parse ``[OPTIMIZER:]KEY=LOW:HIGH:N`` or ``[OPTIMIZER:]KEY=V1;V2;...``.

    Raises:
        ConfigError: the item is malformed; the message shows both forms.
    """
    from memopt.harness.train.optimizers import parse_value, split_scoped

    usage = "e.g. --grid lr=1e-4:1e-1:7, --grid adamw:lr=1e-3:1e-2:3 or --grid 'betas=(0.9,0.95);(0.9,0.999)'"
    scope, key, sep, spec = split_scoped(item)
    if not sep or not key.isidentifier() or not spec.strip():
        raise ConfigError(
            f"--grid {item!r}: expected [OPTIMIZER:]KEY=LOW:HIGH:N or [OPTIMIZER:]KEY=V1;V2;..., {usage}."
        )
    if ";" not in spec and spec.count(":") == 2:
        low, high, count = spec.split(":")
        try:
            values = log_grid(float(low), float(high), int(count))
        except ValueError as exc:
            raise ConfigError(
                f"--grid {item!r}: LOW:HIGH:N needs two positive numbers and a count ({exc}); {usage}."
            ) from exc
    else:
        values = [parse_value(v.strip()) for v in spec.split(";") if v.strip()]
    if not values:
        raise ConfigError(f"--grid {item!r}: no values; {usage}.")
    return GridSpec(scope, key, values)


@dataclass
class Sweep:
    """One hyperparameter swept for one optimizer.

    Attributes:
        optimizer: the row label of the optimizer.
        key: the hyperparameter.
        values: the grid, in order.
        losses: the final validation loss of each value (mean over the tuning seeds; ``inf`` = diverged).
        chosen: the index of the best value.
        fixed: the other hyperparameters tuned before this one, at their chosen values.
    """

    optimizer: str
    key: str
    values: list[Any]
    losses: list[float]
    chosen: int
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> Any:
        """The chosen value."""
        return self.values[self.chosen]

    @property
    def at_edge(self) -> bool:
        """Whether the chosen value is the grid's first or last (the optimum may lie outside the grid)."""
        return len(self.values) > 1 and self.chosen in (0, len(self.values) - 1)

    @property
    def warning(self) -> str | None:
        """A line asking to widen the grid when the choice is at its edge, else None."""
        if not self.at_edge:
            return None
        side = "lowest" if self.chosen == 0 else "highest"
        return (
            f"{self.optimizer}: {self.key}={self.value!r} is the {side} value of its grid; the best may lie "
            f"outside: widen the grid (--grid {self.optimizer}:{self.key}=...)."
        )

    def to_json(self) -> dict[str, Any]:
        """The sweep as plain JSON values (``inf`` as the string ``"inf"``)."""
        return {
            "optimizer": self.optimizer,
            "key": self.key,
            "values": self.values,
            "losses": [loss if math.isfinite(loss) else str(loss) for loss in self.losses],
            "chosen": self.value,
            "chosen_index": self.chosen,
            "at_edge": self.at_edge,
            "warning": self.warning,
            "fixed": self.fixed,
        }


def choose(losses: Sequence[float]) -> int:
    """The index of the lowest finite loss (the first of equal ones).

    Raises:
        ConfigError: every value diverged.
    """
    finite = [(loss, i) for i, loss in enumerate(losses) if math.isfinite(loss)]
    if not finite:
        raise ConfigError("--tune: every value of the grid diverged; give a grid of smaller values with --grid.")
    return min(finite)[1]


def sweep(
    optimizer: str,
    key: str,
    values: Sequence[Any],
    evaluate: Callable[[Any], float],
    fixed: dict[str, Any] | None = None,
) -> Sweep:
    """Evaluate ``evaluate(value)`` (a final validation loss) at every value; the sweep with its choice."""
    losses = [float(evaluate(value)) for value in values]
    return Sweep(optimizer, key, list(values), losses, choose(losses), dict(fixed or {}))


def parse_tune(text: str | None) -> list[str]:
    """``--tune lr,plain_lr`` as a list of keys (empty for None).

    Raises:
        ConfigError: an empty or repeated key.
    """
    if text is None:
        return []
    keys = [k.strip() for k in text.split(",")]
    if not all(k.rpartition(":")[2].isidentifier() and k.count(":") <= 1 for k in keys):
        raise ConfigError(
            f"--tune {text!r}: give hyperparameter names separated by commas, each optionally for one optimizer, "
            "e.g. --tune lr,adamw_groups:plain_lr."
        )
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--tune {text!r}: each hyperparameter once.")
    return keys
