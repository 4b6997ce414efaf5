r"""Saddle-point solvers for :math:`\min_{x\in X}\max_{y\in Y} \mathcal L(x,y) = f(x) + \phi(x,y) - g(y)`.

* :func:`alpd` — ALPD, Algorithm 2 of Khalafi & Boob, "Accelerated Primal-Dual Methods for
  Convex-Strongly-Concave Saddle Point Problems" (ICML 2023, arXiv 2209.04604), step sizes (13) of
  Theorem 4.4 (semi-linear coupling) or of Theorem 4.7 (general coupling); ``prox_g=True`` is the paper's
  "ALPD-prox-g".
* :func:`inexact_alpd` — Algorithm 3 (§5): the ``x``-step keeps the coupling exact and is solved to accuracy
  :math:`\delta_t = \delta_0 t^{-3.5}` (Proposition 5.2) by an inner accelerated gradient loop (Theorem 5.4).
* :func:`lpd` — LPD, Algorithm 1 of the same paper, with the step sizes of Theorem 3.2 (:math:`\mu_g > 0`).
* :func:`gradient_descent_ascent` and :func:`extragradient` (= mirror prox with Euclidean maps, SP-MP of
  Bubeck 2015, §5.2.3) as baselines.

The problem is given as :class:`SaddleOracles` (gradients, projections, constants). Every solver counts its
oracle calls: ``history.oracle_calls`` = gradients of ``f`` (the paper's "gradient complexity" in
:math:`L_f`), ``history.extra`` has ``"grad_x_phi"``, ``"grad_y_phi"``, ``"grad_g"`` counts. With a ``gap``
callable ``(x, y) -> float`` the solvers record it at their output point after every iteration and, with
``tol``, stop as soon as it is at most ``tol``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from memopt.convex.history import History, Result, check_nonnegative, check_positive, check_steps, check_vector

Tensor = torch.Tensor
Gap = Callable[[Tensor, Tensor], float]


@dataclass
class SaddleOracles:
    r"""Oracles and constants of :math:`\min_{x\in X}\max_{y\in Y} f(x) + \phi(x,y) - g(y)` (arXiv 2209.04604, §2).

    Attributes:
        grad_f: :math:`\nabla f(x)`; ``f`` convex, ``L_f``-smooth.
        grad_x_phi, grad_y_phi: :math:`\nabla_x\phi(x, y)`, :math:`\nabla_y\phi(x, y)`; :math:`\phi` convex-concave.
        project_x, project_y: Euclidean projections onto ``X``, ``Y`` (``None``: the whole space).
        grad_g: :math:`\nabla g(y)`; ``g`` ``mu_g``-strongly convex and ``L_g``-smooth.
        prox_g: ``(v, tau) -> argmin_{y in Y} g(y) + ||y - v||^2 / (2 tau)`` (for LPD and ALPD-prox-g).
        L_f, mu_g, L_g: constants of ``f`` and ``g``.
        L_xx, L_yy, L_xy: Lipschitz constants of Assumption 2.3 (:math:`\nabla_x\phi` in ``x``,
            :math:`\nabla_y\phi` in ``y``, :math:`\nabla_y\phi` in ``x``); bilinear :math:`\phi = y^\top Ax`:
            ``L_xx = L_yy = 0``, ``L_xy = ||A||``.
        diameter_x: :math:`\max_{x,x'\in X}\|x - x'\|` (needed by :func:`inexact_alpd`).
    """

    grad_f: Callable[[Tensor], Tensor]
    grad_x_phi: Callable[[Tensor, Tensor], Tensor]
    grad_y_phi: Callable[[Tensor, Tensor], Tensor]
    project_x: Callable[[Tensor], Tensor] | None = None
    project_y: Callable[[Tensor], Tensor] | None = None
    grad_g: Callable[[Tensor], Tensor] | None = None
    prox_g: Callable[[Tensor, float], Tensor] | None = None
    L_f: float = 0.0
    mu_g: float = 0.0
    L_g: float = 0.0
    L_xx: float = 0.0
    L_yy: float = 0.0
    L_xy: float = 0.0
    diameter_x: float | None = None

    def __post_init__(self) -> None:
        for name in ("L_f", "mu_g", "L_g", "L_xx", "L_yy", "L_xy"):
            setattr(self, name, check_nonnegative(name, getattr(self, name), "Constants are norms: use >= 0."))
        if self.grad_g is None and self.prox_g is None:
            raise ValueError("give grad_g (gradient of g) or prox_g (its prox over Y); the dual step needs one.")


class _Counted:
    """The oracles of a :class:`SaddleOracles` with call counters."""

    def __init__(self, oracles: SaddleOracles) -> None:
        self.o = oracles
        self.counts = {"grad_f": 0, "grad_x_phi": 0, "grad_y_phi": 0, "grad_g": 0, "prox_g": 0}

    def grad_f(self, x: Tensor) -> Tensor:
        self.counts["grad_f"] += 1
        return self.o.grad_f(x)

    def gx(self, x: Tensor, y: Tensor) -> Tensor:
        self.counts["grad_x_phi"] += 1
        return self.o.grad_x_phi(x, y)

    def gy(self, x: Tensor, y: Tensor) -> Tensor:
        self.counts["grad_y_phi"] += 1
        return self.o.grad_y_phi(x, y)

    def grad_g(self, y: Tensor) -> Tensor:
        if self.o.grad_g is None:
            raise ValueError("this solver needs grad_g; give SaddleOracles(grad_g=...) or use the prox variant.")
        self.counts["grad_g"] += 1
        return self.o.grad_g(y)

    def prox_g(self, v: Tensor, tau: float) -> Tensor:
        if self.o.prox_g is None:
            raise ValueError("this solver needs prox_g; give SaddleOracles(prox_g=...) or use the gradient variant.")
        self.counts["prox_g"] += 1
        return self.o.prox_g(v, tau)

    def px(self, x: Tensor) -> Tensor:
        return x if self.o.project_x is None else self.o.project_x(x)

    def py(self, y: Tensor) -> Tensor:
        return y if self.o.project_y is None else self.o.project_y(y)

    def dual_step(self, y: Tensor, v: Tensor, tau: float, use_prox: bool) -> Tensor:
        r""":math:`\arg\min_{Y}\langle -v, y\rangle + g(y) + \|y - y_t\|^2/(2\tau)` (prox) or its linearized form."""
        if use_prox:
            return self.prox_g(y + tau * v, tau)
        return self.py(y + tau * (v - self.grad_g(y)))

    def record(self, history: History, x: Tensor, y: Tensor, gap: Gap | None, tol: float | None = None) -> bool:
        """Record one iteration; True if the solver should stop: ``tol`` given and the gap at most ``tol``."""
        history.record(x, self.counts["grad_f"], None, False,
                       **{k: v for k, v in self.counts.items() if k != "grad_f"})
        if gap is not None:
            history.values.append(float(gap(x, y)))
        return tol is not None and bool(history.values) and history.values[-1] <= tol


def _start(x0: Tensor, y0: Tensor, n_steps: int, tol: float | None) -> tuple[Tensor, Tensor]:
    check_steps(n_steps)
    if tol is not None:
        check_positive("tol", tol, "tol is the duality gap at which to stop.")
    return check_vector("x0", x0), check_vector("y0", y0)


def gradient_descent_ascent(
    oracles: SaddleOracles,
    x0: Tensor,
    y0: Tensor,
    *,
    step_x: float,
    step_y: float,
    n_steps: int,
    average: bool = False,
    gap: Gap | None = None,
    tol: float | None = None,
) -> Result:
    r"""Simultaneous projected gradient descent-ascent (baseline).

    Update: :math:`x_{t+1} = \Pi_X(x_t - \eta_x(\nabla f(x_t) + \nabla_x\phi(x_t,y_t)))`,
    :math:`y_{t+1} = \Pi_Y(y_t + \eta_y(\nabla_y\phi(x_t,y_t) - \nabla g(y_t)))` (or
    :math:`\mathrm{prox}_{\eta_y g}(y_t + \eta_y\nabla_y\phi(x_t,y_t))` when only ``prox_g`` is given).
    Output: the last iterate, or the running average with ``average=True``. It can cycle or diverge on bilinear
    problems (e.g. :math:`\min_x\max_y xy`), which :func:`extragradient` fixes.
    """
    step_x = check_positive("step_x", step_x)
    step_y = check_positive("step_y", step_y)
    x, y = _start(x0, y0, n_steps, tol)
    c = _Counted(oracles)
    use_prox = oracles.grad_g is None
    sx, sy = torch.zeros_like(x), torch.zeros_like(y)
    history = History()
    c.record(history, x, y, gap)
    for t in range(1, n_steps + 1):
        gx = c.grad_f(x) + c.gx(x, y)
        gy = c.gy(x, y)
        x, y = c.px(x - step_x * gx), c.dual_step(y, gy, step_y, use_prox)
        sx, sy = sx + x, sy + y
        ox, oy = (sx / t, sy / t) if average else (x, y)
        if c.record(history, ox, oy, gap, tol):
            break
    return Result(ox, history, oy)


def extragradient(
    oracles: SaddleOracles,
    x0: Tensor,
    y0: Tensor,
    *,
    step: float,
    n_steps: int,
    gap: Gap | None = None,
    tol: float | None = None,
) -> Result:
    r"""Euclidean mirror prox / extragradient (Korpelevich 1976; SP-MP of Bubeck 2015, §5.2.3, Theorem 5.2).

    With :math:`F(z) = (\nabla f(x) + \nabla_x\phi(x,y),\ \nabla g(y) - \nabla_y\phi(x,y))`:
    :math:`w_{t+1} = \Pi_Z(z_t - \eta F(z_t))`, :math:`z_{t+1} = \Pi_Z(z_t - \eta F(w_{t+1}))`; output
    :math:`\frac1t\sum_{s\le t} w_{s+1}`. Theorem 5.2: with :math:`\eta = 1/(2M)` the duality gap is at most
    :math:`4M/t` (``M`` as defined there; :math:`\eta \le 1/\mathrm{Lip}(F)` suffices in practice). With only
    ``prox_g``, the ``y`` half-steps use :math:`\mathrm{prox}_{\eta g}`. Two gradients of ``f`` per step.
    """
    step = check_positive("step", step, "Use 1/(2M) of Bubeck's Theorem 5.2 or 1/Lip(F).")
    x, y = _start(x0, y0, n_steps, tol)
    c = _Counted(oracles)
    use_prox = oracles.grad_g is None
    sx, sy = torch.zeros_like(x), torch.zeros_like(y)
    history = History()
    c.record(history, x, y, gap)
    for t in range(1, n_steps + 1):
        wx = c.px(x - step * (c.grad_f(x) + c.gx(x, y)))
        wy = c.dual_step(y, c.gy(x, y), step, use_prox)
        x, y = c.px(x - step * (c.grad_f(wx) + c.gx(wx, wy))), c.dual_step(y, c.gy(wx, wy), step, use_prox)
        sx, sy = sx + wx, sy + wy
        if c.record(history, sx / t, sy / t, gap, tol):
            break
    return Result(sx / t, history, sy / t)


def lpd(
    oracles: SaddleOracles,
    x0: Tensor,
    y0: Tensor,
    *,
    n_steps: int,
    gap: Gap | None = None,
    tol: float | None = None,
) -> Result:
    r"""LPD, the linearized primal-dual method (arXiv 2209.04604, Algorithm 1, step sizes of Theorem 3.2).

    Update (:math:`\tilde x_1 = x_1`), for :math:`t = 1, 2, \dots`:

    1. :math:`y_{t+1} = \arg\min_{y\in Y}\langle -\nabla_y\phi(\tilde x_t, y_t), y\rangle + g(y) + \frac1{2\tau_t}
       \|y - y_t\|^2` (for bilinear :math:`\phi = y^\top Ax`, :math:`\nabla_y\phi(\tilde x_t,\cdot) = A\tilde x_t`);
    2. :math:`x_{t+1} = \Pi_X(x_t - \eta_t(\nabla f(x_t) + \nabla_x\phi(x_t, y_{t+1})))`;
    3. :math:`\tilde x_{t+1} = x_{t+1} + \theta_t(x_{t+1} - x_t)`.

    Output: :math:`\bar z_{t+1} = \sum_{s\le t}\gamma_{s+1}z_{s+1}/\sum_{s\le t}\gamma_{s+1}`. Theorem 3.2
    (:math:`\mu_g > 0`): :math:`\gamma_t = t`, :math:`1/\tau_t = \mu_g t/2`,
    :math:`1/\eta_t = 2L_{xy}^2/(\mu_g(t+1)) + L_f`, :math:`\theta_t = \gamma_{t+1}/\gamma_{t+2}`; Gap
    :math:`\le (2D_X^2L_{xy}^2/\mu_g + D_Y^2\mu_g)/K^2 + 2(K+1)L_fD_X^2/K^2` — not accelerated in :math:`L_f`.
    Step 1 uses ``prox_g`` if given, else its linearization with ``grad_g``.
    """
    mu = check_positive("oracles.mu_g", oracles.mu_g, "LPD (Theorem 3.2) needs a strongly convex g (mu_g > 0).")
    x, y = _start(x0, y0, n_steps, tol)
    c = _Counted(oracles)
    use_prox = oracles.prox_g is not None
    x_tilde = x.clone()
    sx, sy, sw = torch.zeros_like(x), torch.zeros_like(y), 0.0
    history = History()
    c.record(history, x, y, gap)
    for t in range(1, n_steps + 1):
        tau = 2.0 / (mu * t)
        eta = 1.0 / (2 * oracles.L_xy**2 / (mu * (t + 1)) + oracles.L_f)
        theta = (t + 1) / (t + 2)
        y = c.dual_step(y, c.gy(x_tilde, y), tau, use_prox)
        x_next = c.px(x - eta * (c.grad_f(x) + c.gx(x, y)))
        x_tilde = x_next + theta * (x_next - x)
        x = x_next
        weight = t + 1.0
        sx, sy, sw = sx + weight * x, sy + weight * y, sw + weight
        if c.record(history, sx / sw, sy / sw, gap, tol):
            break
    return Result(sx / sw, history, sy / sw)


def alpd_schedule(oracles: SaddleOracles, n_steps: int, prox_g: bool = False, general: bool | None = None):
    r"""The step sizes (13) of Theorem 4.4 (or of Theorem 4.7 when ``general``, default ``L_xx > 0``).

    :math:`\gamma_1 = 1`, :math:`\gamma_t = \frac{t+1}2 + c` (:math:`t\ge2`), :math:`c = (2\sqrt2L_{yy}+2L_g)/\mu_g`;
    :math:`\theta_t = \gamma_{t-1}/\gamma_t`; :math:`\beta_1 = 1`, :math:`\beta_{t+1} = 1 + \theta_{t+1}\beta_t`;
    :math:`\eta_t = (t+1)/(5L_f + 16L_{xy}^2/\mu_g\ [+ (t+1)L_{xx}])`;
    :math:`1/\tau_t = \mu_g t/2 + 2\sqrt2L_{yy} + 2L_g` (``prox_g``: :math:`L_g` taken as 0).
    Returns lists ``beta, theta, eta, tau`` indexed by ``t = 1..n_steps`` (index 0 unused).
    """
    mu = check_positive("oracles.mu_g", oracles.mu_g, "ALPD needs a strongly convex g (mu_g > 0).")
    L_g = 0.0 if prox_g else oracles.L_g
    general = oracles.L_xx > 0 if general is None else general
    c = (2 * math.sqrt(2) * oracles.L_yy + 2 * L_g) / mu
    gamma = [0.0, 1.0] + [(t + 1) / 2 + c for t in range(2, n_steps + 2)]
    theta = [0.0, 0.0] + [gamma[t - 1] / gamma[t] for t in range(2, n_steps + 2)]
    beta = [0.0, 1.0]
    for t in range(1, n_steps + 1):
        beta.append(1 + theta[t + 1] * beta[t])
    base = 5 * oracles.L_f + 16 * oracles.L_xy**2 / mu
    eta = [0.0] + [(t + 1) / (base + ((t + 1) * oracles.L_xx if general else 0.0)) for t in range(1, n_steps + 1)]
    if min(eta[1:]) <= 0 or not all(math.isfinite(e) for e in eta[1:]):
        raise ValueError("the step sizes are not finite: give L_f > 0 or L_xy > 0 in SaddleOracles.")
    tau = [0.0] + [1.0 / (mu * t / 2 + 2 * math.sqrt(2) * oracles.L_yy + 2 * L_g) for t in range(1, n_steps + 1)]
    return beta, theta, eta, tau


def alpd(
    oracles: SaddleOracles,
    x0: Tensor,
    y0: Tensor,
    *,
    n_steps: int,
    prox_g: bool = False,
    gap: Gap | None = None,
    tol: float | None = None,
) -> Result:
    r"""ALPD, the accelerated linearized primal-dual method (arXiv 2209.04604, Algorithm 2).

    Init :math:`\bar x_1 = x_0 = x_1`, :math:`\bar y_1 = y_0 = y_1`. For :math:`t = 1..K`:

    1. :math:`\underline x_t = (1-\beta_t^{-1})\bar x_t + \beta_t^{-1}x_t`;
    2. :math:`v_t = (1+\theta_t)\nabla_y\phi(x_t,y_t) - \theta_t\nabla_y\phi(x_{t-1},y_{t-1})`;
    3. :math:`y_{t+1} = \arg\min_{y\in Y}\langle -v_t + \nabla g(y_t), y\rangle + \frac1{2\tau_t}\|y-y_t\|^2`
       (``prox_g=True``, "ALPD-prox-g": :math:`\arg\min\langle -v_t,y\rangle + g(y) + \frac1{2\tau_t}\|y-y_t\|^2`);
    4. :math:`x_{t+1} = \arg\min_{x\in X}\langle\nabla f(\underline x_t) + \nabla_x\phi(x_t,y_{t+1}), x\rangle
       + \frac1{2\eta_t}\|x - x_t\|^2`;
    5. :math:`\bar x_{t+1} = (1-\beta_t^{-1})\bar x_t + \beta_t^{-1}x_{t+1}`,
       :math:`\bar y_{t+1} = (1-\beta_t^{-1})\bar y_t + \beta_t^{-1}y_{t+1}`.

    Output :math:`(\bar x_{K+1}, \bar y_{K+1})`. Step sizes: :func:`alpd_schedule` (Theorem 4.4, or 4.7 if
    :math:`L_{xx} > 0`). Theorem 4.4: Gap :math:`= O\big(\frac{L_f+L_{yy}}{K^2} + \frac{L_{xy}^2}{\mu_gK^2}\big)`,
    i.e. :math:`O(\sqrt{L_f/\epsilon} + L_{xy}/\sqrt{\mu_g\epsilon})` gradients (accelerated in :math:`L_f`,
    unlike :func:`lpd`). One :math:`\nabla f`, :math:`\nabla_x\phi`, new :math:`\nabla_y\phi` and (without
    ``prox_g``) :math:`\nabla g` per iteration.
    """
    x, y = _start(x0, y0, n_steps, tol)

    def x_step(c: _Counted, t: int, x: Tensor, x_low: Tensor, y: Tensor, eta: float) -> Tensor:
        return c.px(x - eta * (c.grad_f(x_low) + c.gx(x, y)))

    return _alpd_outer(oracles, x, y, n_steps, prox_g, None, gap, tol, x_step)


def _alpd_outer(
    oracles: SaddleOracles,
    x: Tensor,
    y: Tensor,
    n_steps: int,
    prox_g: bool,
    general: bool | None,
    gap: Gap | None,
    tol: float | None,
    x_step: Callable[[_Counted, int, Tensor, Tensor, Tensor, float], Tensor],
) -> Result:
    """Algorithm 2's outer loop, shared by :func:`alpd` and :func:`inexact_alpd`: steps 1-3 and 5 with the step
    sizes of :func:`alpd_schedule`; ``x_step(c, t, x_t, x_low_t, y_{t+1}, eta_t)`` is step 4 and returns
    :math:`x_{t+1}`."""
    beta, theta, eta, tau = alpd_schedule(oracles, n_steps, prox_g, general)
    c = _Counted(oracles)
    x_bar, y_bar = x.clone(), y.clone()
    gy_prev = gy = c.gy(x, y)
    history = History()
    c.record(history, x_bar, y_bar, gap)
    for t in range(1, n_steps + 1):
        b = 1.0 / beta[t]
        x_low = (1 - b) * x_bar + b * x
        v = (1 + theta[t]) * gy - theta[t] * gy_prev
        y = c.dual_step(y, v, tau[t], prox_g)
        x = x_step(c, t, x, x_low, y, eta[t])
        x_bar, y_bar = (1 - b) * x_bar + b * x, (1 - b) * y_bar + b * y
        if t < n_steps:
            gy_prev, gy = gy, c.gy(x, y)
        if c.record(history, x_bar, y_bar, gap, tol):
            break
    return Result(x_bar, history, y_bar)


def inexact_alpd(
    oracles: SaddleOracles,
    x0: Tensor,
    y0: Tensor,
    *,
    n_steps: int,
    prox_g: bool = False,
    delta0: float = 1.0,
    delta_power: float = 3.5,
    gap: Gap | None = None,
    tol: float | None = None,
) -> Result:
    r"""Inexact ALPD for general coupling (arXiv 2209.04604, Algorithm 3, §5).

    As :func:`alpd` with the step sizes (13) (no :math:`L_{xx}` term), except that step 4 keeps the coupling:
    :math:`x_{t+1}` is a :math:`\delta_t`-approximate minimizer over ``X`` of (15)
    :math:`h_t(x) = \langle\nabla f(\underline x_t), x\rangle + \phi(x, y_{t+1}) + \frac1{2\eta_t}\|x - x_t\|^2`,
    with :math:`\delta_t = \delta_0 t^{-3.5}` (Proposition 5.2). :math:`h_t` is :math:`1/\eta_t`-strongly convex
    and :math:`(L_{xx} + 1/\eta_t)`-smooth; it is minimized by projected AGD with constant momentum
    :math:`(\sqrt\kappa_t-1)/(\sqrt\kappa_t+1)` started at :math:`x_t`, run for
    :math:`k_t = 1 + \lceil\sqrt{\kappa_t}\log(\frac{(\alpha_t+\beta_t)D_X^2}{2\delta_t})\rceil` steps, which makes
    the bound of Bubeck's Theorem 3.18 at most :math:`\delta_t` (our choice of inner solver; Theorem 5.4 gives
    :math:`k_t = O(\sqrt{L_{xx}\eta_t}\log(1/\delta_t))`). ``history.extra["grad_x_phi"]`` counts the inner
    gradients; :math:`\nabla f` is evaluated once per outer step.
    """
    x, y = _start(x0, y0, n_steps, tol)
    delta0 = check_positive("delta0", delta0)
    delta_power = check_positive("delta_power", delta_power, "The paper's Proposition 5.2 uses 3.5.")
    if oracles.diameter_x is None:
        raise ValueError("inexact_alpd needs SaddleOracles(diameter_x=...) to size its inner loop.")

    def x_step(c: _Counted, t: int, x: Tensor, x_low: Tensor, y: Tensor, eta: float) -> Tensor:
        linear = c.grad_f(x_low)
        alpha_in, beta_in = 1.0 / eta, oracles.L_xx + 1.0 / eta
        delta = delta0 * t ** (-delta_power)
        root = math.sqrt(beta_in / alpha_in)
        bound = (alpha_in + beta_in) * oracles.diameter_x**2 / (2 * delta)
        k = 1 + math.ceil(root * math.log(max(bound, 1.0)))
        q = (root - 1) / (root + 1)
        anchor, u, w = x, x.clone(), x.clone()
        for _ in range(k):
            w_next = c.px(u - (linear + c.gx(u, y) + (u - anchor) / eta) / beta_in)
            u = (1 + q) * w_next - q * w
            w = w_next
        return w

    return _alpd_outer(oracles, x, y, n_steps, prox_g, False, gap, tol, x_step)
