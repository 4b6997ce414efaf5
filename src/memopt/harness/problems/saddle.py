r"""Saddle-point test problems with known solutions or computable duality gaps, for :mod:`memopt.convex.saddle`.

* :func:`bilinear_saddle` — :math:`\min_x\max_y (x-x^*)^\top A(y-y^*)`, saddle point :math:`(x^*, y^*)`.
* :func:`quadratic_saddle` — quadratic ``f`` and ``g``, bilinear coupling, constraints inactive: the saddle
  point solves a linear system (ALPD paper's setting, closed form).
* :func:`lq_penalty_problem` — the smoothed :math:`\ell_2`-penalty problem (17) of arXiv 2209.04604, §6.1
  (``p = q = 2``).
* :func:`quadratic_constraint_problem` — penalties of convex quadratic constraints, §6.2 (general coupling).

Gaps are exact: the inner maximization over ``Y`` is a projection, the inner minimization over the ball
``X`` a trust-region problem solved by eigendecomposition and bisection (:func:`min_quadratic_on_ball`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from memopt.convex.saddle import SaddleOracles
from memopt.convex.sets import project_ball, project_nonneg_ball

Tensor = torch.Tensor


def min_quadratic_on_ball(eigenvalues: Tensor, eigenvectors: Tensor, h: Tensor, radius: float) -> float:
    r""":math:`\min_{\|x\|\le r}\frac12x^\top Hx + h^\top x` for PSD :math:`H = V\mathrm{diag}(d)V^\top`.

    The unconstrained minimizer if it is inside the ball, else :math:`x(\lambda) = -(H+\lambda I)^{-1}h` with
    :math:`\|x(\lambda)\| = r` (the KKT conditions), :math:`\lambda > 0` found by Newton's method on the
    secular equation :math:`1/\|x(\lambda)\| = 1/r` (Moré & Sorensen 1983), which increases monotonically
    to the root from any :math:`\lambda` with :math:`\|x(\lambda)\| \ge r`.
    """
    d = eigenvalues.clamp(min=0.0)
    hv = eigenvectors.T @ h
    h2 = hv * hv
    if float(d.min()) > 1e-12 * max(float(d.max()), 1.0):
        z = -hv / d
        if float(z.norm()) <= radius:
            return float(0.5 * (d * z * z).sum() + hv @ z)
    lam = 1e-12 * max(float(d.max()), 1.0)
    for _ in range(100):
        s = d + lam
        norm2 = float((h2 / s**2).sum())
        if norm2 <= radius**2:
            break
        norm = math.sqrt(norm2)
        step = (norm / radius - 1) * norm2 / float((h2 / s**3).sum())
        lam += step
        if step <= 1e-15 * lam:
            break
    z = -hv / (d + lam)
    return float(0.5 * (d * z * z).sum() + hv @ z)


@dataclass
class BilinearSaddle:
    r""":math:`\mathcal L(x,y) = (x-x^*)^\top A(y-y^*)` on :math:`\mathbb R^n\times\mathbb R^n`, ``A`` invertible:
    the unique saddle point is :math:`(x^*, y^*)`. ``distance(x, y)`` is :math:`\|(x,y)-(x^*,y^*)\|`."""

    A: Tensor
    x_star: Tensor
    y_star: Tensor

    def oracles(self) -> SaddleOracles:
        zero_x = torch.zeros_like(self.x_star)
        return SaddleOracles(
            grad_f=lambda x: zero_x,
            grad_x_phi=lambda x, y: self.A @ (y - self.y_star),
            grad_y_phi=lambda x, y: self.A.T @ (x - self.x_star),
            grad_g=lambda y: torch.zeros_like(y),
            L_xy=float(torch.linalg.matrix_norm(self.A, 2)),
        )

    def distance(self, x: Tensor, y: Tensor) -> float:
        return math.sqrt(float((x - self.x_star).norm() ** 2 + (y - self.y_star).norm() ** 2))


def bilinear_saddle(n: int = 10, seed: int = 0) -> BilinearSaddle:
    """``A = Q diag(s) R`` with singular values ``s`` in ``[0.5, 1]``, saddle point ``N(0, I)``."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    r, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    s = torch.linspace(0.5, 1.0, n, dtype=torch.float64)
    return BilinearSaddle((q * s) @ r, torch.randn(n, generator=g, dtype=torch.float64),
                          torch.randn(n, generator=g, dtype=torch.float64))


@dataclass
class QuadraticSaddle:
    r""":math:`\min_{\|x\|\le R_x}\max_{\|y\|\le R_y} \frac12x^\top Qx + c^\top x + \rho\,y^\top(Ax - b)
    - \frac{\mu_g}2\|y\|^2`.

    ``f`` is ``L_f = ||Q||``-smooth, ``g(y) = mu_g/2 ||y||^2 + rho b^T y``, bilinear coupling with
    ``L_xy = rho ||A||``. :meth:`gap` is the exact duality gap of Definition 2.1 of arXiv 2209.04604.
    :meth:`unconstrained_saddle` solves :math:`Qx + c + \rho A^\top y = 0`, :math:`\rho(Ax - b) = \mu_g y`.
    """

    Q: Tensor
    c: Tensor
    A: Tensor
    b: Tensor
    mu_g: float
    rho: float = 1.0
    radius_x: float = 1.0
    radius_y: float = 1.0
    _eig: tuple[Tensor, Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._eig = torch.linalg.eigh(self.Q)

    @property
    def L_f(self) -> float:
        return float(self._eig[0].max())

    def f(self, x: Tensor) -> Tensor:
        return 0.5 * x @ (self.Q @ x) + self.c @ x

    def lagrangian(self, x: Tensor, y: Tensor) -> float:
        return float(self.f(x) + self.rho * y @ (self.A @ x - self.b) - 0.5 * self.mu_g * y @ y)

    def oracles(self) -> SaddleOracles:
        rho, mu, ry = self.rho, self.mu_g, self.radius_y
        ball_y = project_ball(ry)

        def prox_g(v: Tensor, tau: float) -> Tensor:
            # argmin_{||y|| <= R_y} mu/2 ||y||^2 + rho b^T y + ||y - v||^2/(2 tau): isotropic, so project
            return ball_y((v - tau * rho * self.b) / (1 + tau * mu))

        return SaddleOracles(
            grad_f=lambda x: self.Q @ x + self.c,
            grad_x_phi=lambda x, y: rho * (self.A.T @ y),
            grad_y_phi=lambda x, y: rho * (self.A @ x),
            project_x=project_ball(self.radius_x),
            project_y=ball_y,
            grad_g=lambda y: mu * y + rho * self.b,
            prox_g=prox_g,
            L_f=self.L_f,
            mu_g=mu,
            L_g=mu,
            L_xy=rho * float(torch.linalg.matrix_norm(self.A, 2)),
            diameter_x=2 * self.radius_x,
        )

    def gap(self, x: Tensor, y: Tensor) -> float:
        r""":math:`\max_{y'\in Y}\mathcal L(x, y') - \min_{x'\in X}\mathcal L(x', y)`."""
        r = self.rho * (self.A @ x - self.b)
        y_best = project_ball(self.radius_y)(r / self.mu_g)
        upper = float(self.f(x)) + float(y_best @ r - 0.5 * self.mu_g * y_best @ y_best)
        inner = min_quadratic_on_ball(self._eig[0], self._eig[1], self.c + self.rho * self.A.T @ y, self.radius_x)
        lower = inner - float(self.rho * y @ self.b + 0.5 * self.mu_g * y @ y)
        return upper - lower

    def unconstrained_saddle(self) -> tuple[Tensor, Tensor]:
        n, m = self.Q.shape[0], self.A.shape[0]
        K = torch.zeros(n + m, n + m, dtype=self.Q.dtype)
        K[:n, :n], K[:n, n:] = self.Q, self.rho * self.A.T
        K[n:, :n], K[n:, n:] = self.rho * self.A, -self.mu_g * torch.eye(m, dtype=self.Q.dtype)
        z = torch.linalg.solve(K, torch.cat([-self.c, self.rho * self.b]))
        return z[:n], z[n:]


def _spectrum_matrix(n: int, top: float, g: torch.Generator, low: float = 0.0) -> Tensor:
    """``Lambda^T D Lambda`` with ``Lambda`` a random orthogonal matrix and ``D ~ Uniform[low, top]`` (the
    ALPD paper's recipe for ``Q`` and ``A_j``), ``D`` scaled so that its maximum is exactly ``top``."""
    lam, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    d = low + (top - low) * torch.rand(n, generator=g, dtype=torch.float64)
    d = d * (top / d.max())
    m = (lam.T * d) @ lam
    return (m + m.T) / 2


def quadratic_saddle(n: int = 20, m: int = 10, L_f: float = 10.0, mu_f: float = 1.0, mu_g: float = 1.0,
                     seed: int = 0) -> QuadraticSaddle:
    """Strongly convex ``f`` (spectrum in ``[mu_f, L_f]``), ``A ~ N(0, 1/m)``; the balls are chosen 10x larger
    than the unconstrained saddle point, so it is the constrained one (closed form)."""
    g = torch.Generator().manual_seed(seed)
    Q = _spectrum_matrix(n, L_f, g, low=mu_f)
    c = torch.randn(n, generator=g, dtype=torch.float64)
    A = torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(m)
    b = torch.randn(m, generator=g, dtype=torch.float64)
    problem = QuadraticSaddle(Q, c, A, b, mu_g)
    x, y = problem.unconstrained_saddle()
    return QuadraticSaddle(Q, c, A, b, mu_g, radius_x=10 * float(x.norm()) + 1, radius_y=10 * float(y.norm()) + 1)


def lq_penalty_problem(n: int = 100, m: int = 100, L_f: float = 200.0, mu_g: float = 1.0, rho: float = 1.0,
                       radius_x: float = 1.0, radius_y: float = 1.0, seed: int = 0) -> QuadraticSaddle:
    r"""Problem (17) of arXiv 2209.04604, §6.1, with ``p = q = 2``: :math:`\min_{x\in X}\max_{\|y\|_2\le1}
    f(x) + \rho\langle y, Ax - b\rangle - \frac{\mu_g}2\|y\|^2`, :math:`f = \frac12x^\top Qx + c^\top x`,
    :math:`Q = \Lambda^\top D\Lambda` (:math:`D` uniform on ``[0, L_f]``, max rescaled to ``L_f``),
    :math:`c \sim N(0, I)`, ``A`` and ``b`` uniform on ``[0, 1]``. ``X`` is the ball of radius ``radius_x``
    (our choice; the authors' code uses diameters ``D_X = D_Y = 1``)."""
    g = torch.Generator().manual_seed(seed)
    Q = _spectrum_matrix(n, L_f, g)
    c = torch.randn(n, generator=g, dtype=torch.float64)
    A = torch.rand(m, n, generator=g, dtype=torch.float64)
    b = torch.rand(m, generator=g, dtype=torch.float64)
    return QuadraticSaddle(Q, c, A, b, mu_g, rho, radius_x, radius_y)


@dataclass
class QuadraticConstraintProblem:
    r""":math:`\min_{\|x\|\le R_x}\max_{y\ge0,\|y\|\le R_y} \frac12x^\top Qx + c^\top x + \sum_j y_j s_j(x) -
    \frac{\mu_g}2\|y\|^2` with :math:`s_j(x) = \frac12x^\top A_jx + b_j^\top x - d_j` (arXiv 2209.04604, §6.2):
    the coupling is quadratic in ``x`` (``L_xx > 0``), linear in ``y`` (``L_yy = 0``)."""

    Q: Tensor
    c: Tensor
    As: Tensor  # (m, n, n)
    bs: Tensor  # (m, n)
    d: Tensor  # (m,)
    mu_g: float
    radius_x: float = 1.0
    radius_y: float = 1.0

    def constraints(self, x: Tensor) -> Tensor:
        return 0.5 * torch.einsum("i,jik,k->j", x, self.As, x) + self.bs @ x - self.d

    def oracles(self) -> SaddleOracles:
        mu = self.mu_g
        ball_y = project_nonneg_ball(self.radius_y)
        norms = torch.linalg.matrix_norm(self.As, 2)
        L_xx = self.radius_y * float(norms.norm())
        L_xy = float((norms * self.radius_x + self.bs.norm(dim=1)).norm())
        return SaddleOracles(
            grad_f=lambda x: self.Q @ x + self.c,
            grad_x_phi=lambda x, y: torch.einsum("j,jik,k->i", y, self.As, x) + self.bs.T @ y,
            grad_y_phi=lambda x, y: self.constraints(x),
            project_x=project_ball(self.radius_x),
            project_y=ball_y,
            grad_g=lambda y: mu * y,
            prox_g=lambda v, tau: ball_y(v / (1 + tau * mu)),
            L_f=float(torch.linalg.eigvalsh(self.Q).max()),
            mu_g=mu,
            L_g=mu,
            L_xx=L_xx,
            L_xy=L_xy,
            diameter_x=2 * self.radius_x,
        )

    def gap(self, x: Tensor, y: Tensor) -> float:
        s = self.constraints(x)
        y_best = project_nonneg_ball(self.radius_y)(s / self.mu_g)
        upper = float(0.5 * x @ (self.Q @ x) + self.c @ x + y_best @ s - 0.5 * self.mu_g * y_best @ y_best)
        H = self.Q + torch.einsum("j,jik->ik", y, self.As)
        evals, evecs = torch.linalg.eigh((H + H.T) / 2)
        inner = min_quadratic_on_ball(evals, evecs, self.c + self.bs.T @ y, self.radius_x)
        lower = inner - float(y @ self.d + 0.5 * self.mu_g * y @ y)
        return upper - lower


def quadratic_constraint_problem(n: int = 100, m: int = 10, L_f: float = 200.0, L_a: float = 10.0,
                                 mu_g: float = 1.0, radius_x: float = 1.0, radius_y: float = 1.0, seed: int = 0
                                 ) -> QuadraticConstraintProblem:
    r"""§6.2 of arXiv 2209.04604: ``Q`` and the PSD ``A_j`` generated like §6.1's ``Q`` (tops ``L_f`` and
    ``L_a``), ``c, b_j ~ N(0, I)``, ``d_j ~ Uniform[0, 1]``; ``Y = {y >= 0, ||y|| <= R_y}`` (our choice of
    dual set; the paper's bound on ``y`` was not recoverable from the extracted text)."""
    g = torch.Generator().manual_seed(seed)
    Q = _spectrum_matrix(n, L_f, g)
    c = torch.randn(n, generator=g, dtype=torch.float64)
    As = torch.stack([_spectrum_matrix(n, L_a, g) for _ in range(m)])
    bs = torch.randn(m, n, generator=g, dtype=torch.float64)
    d = torch.rand(m, generator=g, dtype=torch.float64)
    return QuadraticConstraintProblem(Q, c, As, bs, d, mu_g, radius_x, radius_y)


def power_law_saddle(L_f: float, n: int = 200, m: int = 20, exponent: float = 0.05, lam_min: float = 1e-6,
                     mu_g: float = 1.0, radius_y: float = 10.0, seed: int = 0) -> QuadraticSaddle:
    r"""A bilinear saddle point whose primal part is hard for first-order methods, scaled by ``L_f``.

    :math:`f(x) = \frac{L_f}2(x - x_0)^\top\mathrm{diag}(\lambda)(x - x_0)` with the spectrum and :math:`x_0` of
    :func:`memopt.harness.problems.convex.power_law_quadratic` (so GD-like methods stay in their sublinear regime),
    :math:`\phi = y^\top(Ax - b)` with :math:`\|A\| = 1` (``L_xy = 1``), :math:`g = \frac{\mu_g}2\|y\|^2 + b^\top y`,
    ``X`` = ball of radius :math:`2\|x_0\|`, ``Y`` = ball of radius ``radius_y``. Only ``L_f`` changes between
    instances of the same ``seed``: Theorem 3.2 vs 4.4 of arXiv 2209.04604 predict
    :math:`K_{LPD} \propto L_f/\epsilon` and :math:`K_{ALPD} \propto \sqrt{L_f/\epsilon}` once ``L_f`` dominates
    :math:`L_{xy}^2/\mu_g`.
    """
    from memopt.harness.problems.convex import power_law_quadratic

    base = power_law_quadratic(dim=n, exponent=exponent, lam_min=lam_min)
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=torch.float64)
    A = A / torch.linalg.matrix_norm(A, 2)
    b = torch.randn(m, generator=g, dtype=torch.float64)
    Q = torch.diag(L_f * base.eigenvalues)
    return QuadraticSaddle(Q, -Q @ base.minimizer, A, b, mu_g, 1.0, 2 * float(base.minimizer.norm()), radius_y)
