r"""Mirror maps, mirror descent, dual averaging and mirror prox (Bubeck 2015, Ch. 4 and §5.2).

A :class:`MirrorMap` :math:`\Phi` supplies :math:`\nabla\Phi` (:meth:`~MirrorMap.to_dual`), its inverse
:math:`\nabla\Phi^*` (:meth:`~MirrorMap.to_primal`), the Bregman projection onto the feasible set
:math:`\Pi^\Phi_{\mathcal X}` (:meth:`~MirrorMap.project`) and :math:`x_1 \in \arg\min_{\mathcal X}\Phi`
(:meth:`~MirrorMap.initial`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from memopt.convex.history import History, Result, check_positive, check_steps, check_vector, step_schedule

Tensor = torch.Tensor


class MirrorMap:
    r"""Interface of a mirror map :math:`\Phi` restricted to a feasible set :math:`\mathcal X`."""

    def to_dual(self, x: Tensor) -> Tensor:
        r""":math:`\nabla\Phi(x)`."""
        raise NotImplementedError

    def to_primal(self, u: Tensor) -> Tensor:
        r""":math:`(\nabla\Phi)^{-1}(u)`."""
        raise NotImplementedError

    def project(self, y: Tensor) -> Tensor:
        r"""Bregman projection :math:`\arg\min_{x \in \mathcal X} D_\Phi(x, y)`."""
        raise NotImplementedError

    def initial(self) -> Tensor:
        r""":math:`x_1 \in \arg\min_{x\in\mathcal X}\Phi(x)`."""
        raise NotImplementedError

    def radius_squared(self) -> float:
        r""":math:`R^2 = \sup_{\mathcal X}\Phi - \min_{\mathcal X}\Phi`."""
        raise NotImplementedError

    def step(self, x: Tensor, g: Tensor, eta: float) -> Tensor:
        r"""One mirror step :math:`\Pi^\Phi(\nabla\Phi^{-1}(\nabla\Phi(x) - \eta g))`, i.e. (4.5)
        :math:`\arg\min_{\mathcal X} \eta g^\top z + D_\Phi(z, x)`."""
        return self.project(self.to_primal(self.to_dual(x) - eta * g))


class EuclideanMap(MirrorMap):
    r""":math:`\Phi(x) = \frac12\|x\|_2^2` (§4.3 "ball" setup): mirror descent is projected subgradient descent.

    Args:
        center: :math:`x_1` (the minimizer of :math:`\Phi` over :math:`\mathcal X`: shift the set so that it
            contains the origin, or pass the point where you start).
        project: Euclidean projection onto :math:`\mathcal X` (``None``: unconstrained).
        radius: radius of :math:`\mathcal X` around ``center`` (for :meth:`radius_squared`), if known.
    """

    def __init__(self, center: Tensor, project: Callable[[Tensor], Tensor] | None = None,
                 radius: float | None = None) -> None:
        self.center = check_vector("center", center)
        self._project = project
        self.radius = radius

    def to_dual(self, x: Tensor) -> Tensor:
        return x

    def to_primal(self, u: Tensor) -> Tensor:
        return u

    def project(self, y: Tensor) -> Tensor:
        return y if self._project is None else self._project(y)

    def initial(self) -> Tensor:
        return self.center.clone()

    def radius_squared(self) -> float:
        if self.radius is None:
            raise ValueError("EuclideanMap(radius=...) is needed for radius_squared().")
        return 0.5 * self.radius**2


class EntropySimplex(MirrorMap):
    r"""Negative entropy :math:`\Phi(x) = \sum_i x_i\log x_i` on the simplex :math:`\Delta_n` (§4.3).

    :math:`\nabla\Phi(x) = 1 + \log x`; the Bregman projection onto :math:`\Delta_n` is renormalization;
    :math:`x_1 = (1/n, \dots, 1/n)`; :math:`R^2 = \log n`; :math:`\Phi` is 1-strongly convex w.r.t.
    :math:`\|\cdot\|_1` (Pinsker), so the Lipschitz constant ``L`` of the theorems bounds :math:`\|g\|_\infty`.
    """

    def __init__(self, n: int, dtype: torch.dtype = torch.float64) -> None:
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an integer >= 2 (the simplex dimension), got {n!r}.")
        self.n, self.dtype = n, dtype

    def to_dual(self, x: Tensor) -> Tensor:
        return 1 + torch.log(x)

    def to_primal(self, u: Tensor) -> Tensor:
        # exp(u - 1) up to a positive factor that the projection removes; shift for numerical safety
        return torch.exp(u - u.max())

    def project(self, y: Tensor) -> Tensor:
        return y / y.sum()

    def initial(self) -> Tensor:
        return torch.full((self.n,), 1.0 / self.n, dtype=self.dtype)

    def radius_squared(self) -> float:
        return math.log(self.n)


class ProductMap(MirrorMap):
    r""":math:`\Phi(z) = \sum_k a_k\Phi_k(z_k)` on a product :math:`\mathcal Z = \prod_k \mathcal X_k`
    (§5.2.1: SP-MD / SP-MP use :math:`a\Phi_{\mathcal X} + b\Phi_{\mathcal Y}`); ``z`` is the concatenation.

    The Bregman projection is blockwise (the weights do not change the blocks' projections).
    """

    def __init__(self, maps: Sequence[MirrorMap], sizes: Sequence[int], weights: Sequence[float] | None = None):
        if len(maps) != len(sizes):
            raise ValueError(f"maps and sizes must have the same length, got {len(maps)} and {len(sizes)}.")
        self.maps, self.sizes = list(maps), [int(s) for s in sizes]
        weights = [1.0] * len(maps) if weights is None else list(weights)
        self.weights = [check_positive(f"weights[{i}]", w) for i, w in enumerate(weights)]

    def _split(self, z: Tensor) -> tuple[Tensor, ...]:
        if z.numel() != sum(self.sizes):
            raise ValueError(f"z has {z.numel()} entries but the blocks have sizes {self.sizes}.")
        return torch.split(z, self.sizes)

    def to_dual(self, x: Tensor) -> Tensor:
        return torch.cat([a * m.to_dual(b) for m, a, b in zip(self.maps, self.weights, self._split(x))])

    def to_primal(self, u: Tensor) -> Tensor:
        return torch.cat([m.to_primal(b / a) for m, a, b in zip(self.maps, self.weights, self._split(u))])

    def project(self, y: Tensor) -> Tensor:
        return torch.cat([m.project(b) for m, b in zip(self.maps, self._split(y))])

    def initial(self) -> Tensor:
        return torch.cat([m.initial() for m in self.maps])

    def radius_squared(self) -> float:
        return sum(a * m.radius_squared() for m, a in zip(self.maps, self.weights))


def mirror_descent(
    subgrad: Callable[[Tensor], Tensor],
    mirror: MirrorMap,
    *,
    step: float | Callable[[int], float],
    n_steps: int,
    x0: Tensor | None = None,
    monitor: Callable[[Tensor], float | Tensor] | None = None,
    keep_iterates: bool = False,
) -> Result:
    r"""Mirror descent (Bubeck 2015, §4.2).

    Update: :math:`x_1 \in \arg\min_{\mathcal X}\Phi` (or ``x0``);
    :math:`\nabla\Phi(y_{t+1}) = \nabla\Phi(x_t) - \eta g_t`, :math:`g_t \in \partial f(x_t)`;
    :math:`x_{t+1} = \Pi^\Phi_{\mathcal X}(y_{t+1})`. Output (monitored): :math:`\frac1t\sum_{s=1}^t x_s`.

    Theorem 4.2: :math:`\Phi` ``rho``-strongly convex w.r.t. :math:`\|\cdot\|`, ``f`` ``L``-Lipschitz w.r.t. it,
    :math:`\eta = \frac RL\sqrt{2\rho/t}` give :math:`f(\bar x_t) - f^* \le RL\sqrt{2/(\rho t)}`. On the simplex
    with entropy (:class:`EntropySimplex`) the step is :math:`x_{t+1} \propto x_t e^{-\eta g_t}`. With a
    stochastic ``subgrad`` (unbiased, :math:`\mathbb E\|\tilde g\|_*^2 \le B^2`) this is S-MD, Theorem 6.1.
    """
    eta = step_schedule("step", step)
    check_steps(n_steps)
    x = mirror.initial() if x0 is None else check_vector("x0", x0)
    total = torch.zeros_like(x)
    history = History()
    history.record(x, 0, monitor, keep_iterates)
    for s in range(1, n_steps + 1):
        total = total + x
        x = mirror.step(x, subgrad(x), eta(s))
        history.record(total / s, s, monitor, keep_iterates)
    return Result(total / n_steps, history)


def dual_averaging(
    subgrad: Callable[[Tensor], Tensor],
    mirror: MirrorMap,
    *,
    step: float,
    n_steps: int,
    monitor: Callable[[Tensor], float | Tensor] | None = None,
    keep_iterates: bool = False,
) -> Result:
    r"""Dual averaging, a.k.a. lazy mirror descent (Nesterov 2009; Bubeck 2015, §4.4).

    Update: :math:`\nabla\Phi(y_1) = 0`, :math:`\nabla\Phi(y_{t+1}) = \nabla\Phi(y_t) - \eta g_t`,
    :math:`x_t = \Pi^\Phi_{\mathcal X}(y_t)`, i.e.
    :math:`x_t = \arg\min_{\mathcal X}\eta\sum_{s<t}g_s^\top x + \Phi(x)`. On the simplex with entropy,
    :math:`x_t = \mathrm{softmax}(-\eta\sum_{s<t}g_s)`. Output (monitored): :math:`\frac1t\sum_{s=1}^t x_s`.

    Theorem 4.3: :math:`\eta = \frac RL\sqrt{\rho/(2t)}` gives :math:`f(\bar x_t) - f^* \le 2RL\sqrt{2/(\rho t)}`.
    """
    eta = check_positive("step", step, "Use the step of Theorem 4.3, R/L sqrt(rho/(2t)).")
    check_steps(n_steps)
    theta = torch.zeros_like(mirror.initial())
    x = mirror.project(mirror.to_primal(theta))
    total = torch.zeros_like(x)
    history = History()
    history.record(x, 0, monitor, keep_iterates)
    for s in range(1, n_steps + 1):
        total = total + x
        theta = theta - eta * subgrad(x)
        x = mirror.project(mirror.to_primal(theta))
        history.record(total / s, s, monitor, keep_iterates)
    return Result(total / n_steps, history)


def mirror_prox(
    field: Callable[[Tensor], Tensor],
    mirror: MirrorMap,
    *,
    step: float,
    n_steps: int,
    x0: Tensor | None = None,
    monitor: Callable[[Tensor], float | Tensor] | None = None,
    keep_iterates: bool = False,
) -> Result:
    r"""Mirror prox (Nemirovski 2004; Bubeck 2015, §4.5 and SP-MP of §5.2.3).

    Update: :math:`\nabla\Phi(y'_{t+1}) = \nabla\Phi(x_t) - \eta g(x_t)`,
    :math:`y_{t+1} = \Pi^\Phi(y'_{t+1})`; :math:`\nabla\Phi(x'_{t+1}) = \nabla\Phi(x_t) - \eta g(y_{t+1})`,
    :math:`x_{t+1} = \Pi^\Phi(x'_{t+1})`. Output (monitored): :math:`\frac1t\sum_{s=1}^t y_{s+1}`.

    ``field`` is :math:`\nabla f` for minimization (Theorem 4.4: :math:`\eta = \rho/\beta` gives
    :math:`f(\bar y) - f^* \le \beta R^2/(\rho t)`), or the saddle field
    :math:`(\nabla_x\varphi, -\nabla_y\varphi)` on a :class:`ProductMap` (Theorem 5.2: duality gap
    :math:`\le 4M/t`). Two field evaluations per step; ``history.oracle_calls`` counts them.
    """
    eta = check_positive("step", step, "Use rho/beta (Theorem 4.4) or 1/(2M) (Theorem 5.2).")
    check_steps(n_steps)
    x = mirror.initial() if x0 is None else check_vector("x0", x0)
    total = torch.zeros_like(x)
    history = History()
    history.record(x, 0, monitor, keep_iterates)
    for s in range(1, n_steps + 1):
        y = mirror.step(x, field(x), eta)
        x = mirror.step(x, field(y), eta)
        total = total + y
        history.record(total / s, 2 * s, monitor, keep_iterates)
    return Result(total / n_steps, history)
