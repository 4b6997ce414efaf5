r"""Stochastic first-order methods (Bubeck 2015, Ch. 6): SGD / stochastic mirror descent with averaging,
mini-batch SGD and SVRG.

A stochastic oracle is a callable ``stoch_grad(x, generator) -> g`` with :math:`\mathbb E[g \mid x] \in
\partial f(x)`; the solvers draw from a ``torch.Generator`` seeded by ``seed`` so that runs are reproducible.
(Stochastic mirror descent with a non-Euclidean map is :func:`memopt.convex.mirror.mirror_descent` with a
stochastic ``subgrad``; Theorem 6.1.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from memopt.convex.history import History, Result, check_positive, check_steps, check_vector, step_schedule

Tensor = torch.Tensor
StochasticOracle = Callable[[Tensor, torch.Generator], Tensor]


def sgd(
    stoch_grad: StochasticOracle,
    x0: Tensor,
    *,
    step: float | Callable[[int], float],
    n_steps: int,
    batch_size: int = 1,
    project: Callable[[Tensor], Tensor] | None = None,
    average: Literal["uniform", "linear", "shifted", "last"] = "uniform",
    seed: int = 0,
    monitor: Callable[[Tensor], float | Tensor] | None = None,
) -> Result:
    r"""Projected (mini-batch) stochastic gradient descent.

    Update (Bubeck 2015, §6.1, §6.4): :math:`x_{t+1} = \Pi_{\mathcal X}(x_t - \frac{\eta_t}m\sum_{i=1}^m
    \tilde g_i(x_t))`, ``m = batch_size`` independent oracle calls. Output (monitored):

    * ``"uniform"``: :math:`\frac1t\sum_{s=1}^t x_s` — Theorem 6.1 (Euclidean S-MD): with
      :math:`\mathbb E\|\tilde g\|^2 \le B^2` and :math:`\eta = \frac RB\sqrt{2/t}`,
      :math:`\mathbb Ef(\bar x_t) - f^* \le RB\sqrt{2/t}`;
    * ``"linear"``: :math:`\sum_{s=1}^t\frac{2s}{t(t+1)}x_s` — Theorem 6.2: ``alpha``-strongly convex ``f``,
      :math:`\eta_s = 2/(\alpha(s+1))` give :math:`\mathbb Ef - f^* \le 2B^2/(\alpha(t+1))`;
    * ``"shifted"``: :math:`\frac1t\sum_{s=1}^t x_{s+1}` — Theorem 6.3 (smooth ``f``, variance
      :math:`\sigma^2`, step :math:`1/(\beta + 1/\eta)`, :math:`\eta = \frac R\sigma\sqrt{2/t}`):
      :math:`\mathbb Ef - f^* \le R\sigma\sqrt{2/t} + \beta R^2/t`;
    * ``"last"``: :math:`x_{t+1}`.

    ``history.oracle_calls`` counts stochastic gradients (``batch_size`` per step).
    """
    eta = step_schedule("step", step)
    check_steps(n_steps)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if average not in ("uniform", "linear", "shifted", "last"):
        raise ValueError(f"average must be 'uniform', 'linear', 'shifted' or 'last', got {average!r}.")
    generator = torch.Generator().manual_seed(seed)
    x = check_vector("x0", x0)
    total, weight = torch.zeros_like(x), 0.0
    history = History()
    history.record(x, 0, monitor)
    for s in range(1, n_steps + 1):
        if average in ("uniform", "linear"):
            w = float(s) if average == "linear" else 1.0
            total, weight = total + w * x, weight + w
        g = sum(stoch_grad(x, generator) for _ in range(batch_size)) / batch_size
        x = x - eta(s) * g
        if project is not None:
            x = project(x)
        if average == "shifted":
            total, weight = total + x, weight + 1.0
        output = x if average == "last" else total / weight
        history.record(output, s * batch_size, monitor)
    return Result(output, history)


def svrg(
    component_grad: Callable[[Tensor, int], Tensor],
    n_components: int,
    x0: Tensor,
    *,
    step: float,
    epoch_length: int,
    n_epochs: int,
    seed: int = 0,
    monitor: Callable[[Tensor], float | Tensor] | None = None,
) -> Result:
    r"""SVRG, stochastic variance reduced gradient (Johnson & Zhang 2013; Bubeck 2015, §6.3).

    For :math:`f = \frac1m\sum_{i=1}^m f_i` (``component_grad(x, i)`` = :math:`\nabla f_i(x)`). Epoch ``s``:
    :math:`x^{(s)}_1 = y^{(s)}`; for :math:`t = 1..k`:
    :math:`x^{(s)}_{t+1} = x^{(s)}_t - \eta(\nabla f_{i_t}(x^{(s)}_t) - \nabla f_{i_t}(y^{(s)}) + \nabla f(y^{(s)}))`,
    :math:`i_t` uniform; :math:`y^{(s+1)} = \frac1k\sum_{t=1}^k x^{(s)}_t`. Output (monitored once per epoch):
    :math:`y^{(s)}`. Theorem 6.5: :math:`f_i` convex ``beta``-smooth, ``f`` ``alpha``-strongly convex,
    :math:`\eta = 1/(10\beta)`, :math:`k = 20\kappa` give :math:`\mathbb Ef(y^{(s+1)}) - f^* \le
    0.9^s(f(y^{(1)}) - f^*)`. ``history.oracle_calls`` counts component gradients (``m`` per full gradient).
    """
    eta = check_positive("step", step, "Theorem 6.5 uses 1/(10 beta).")
    for name, value in (("n_components", n_components), ("epoch_length", epoch_length), ("n_epochs", n_epochs)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    generator = torch.Generator().manual_seed(seed)
    y = check_vector("x0", x0)
    calls = 0
    history = History()
    history.record(y, calls, monitor)
    for _ in range(n_epochs):
        full = sum(component_grad(y, i) for i in range(n_components)) / n_components
        calls += n_components
        x, total = y.clone(), torch.zeros_like(y)
        indices = torch.randint(n_components, (epoch_length,), generator=generator).tolist()
        for i in indices:
            total = total + x
            x = x - eta * (component_grad(x, i) - component_grad(y, i) + full)
            calls += 2
        y = total / epoch_length
        history.record(y, calls, monitor)
    return Result(y, history)
