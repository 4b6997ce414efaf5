"""Convex test problems with known optima for :mod:`memopt.convex` (float64, generated from a seed).

* :func:`power_law_quadratic` — diagonal quadratic whose spectral measure makes GD and AGD show their
  worst-case sublinear slopes (-1, -2) over many decades.
* :func:`ill_conditioned_quadratic` — rotated quadratic with spectrum in ``[alpha, beta]`` (linear rates).
* :func:`lasso` — L1-regularised least squares, with scikit-learn's ``Lasso`` as the reference.
* :func:`logistic` — L2-regularised logistic regression, optimum by Newton's method.
* :func:`simplex_center_quadratic` — Frank–Wolfe's 1/t lower-bound instance on the simplex.
* :func:`simplex_least_squares`, :func:`l1_regression` — least squares on the simplex (smooth) and
  least absolute deviations (non-smooth) with a planted solution, ``f* = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


class _Spectrum:
    """``beta`` and ``alpha`` of a quadratic: the largest and smallest of its ``eigenvalues``."""

    eigenvalues: Tensor

    @property
    def beta(self) -> float:
        return float(self.eigenvalues.max())

    @property
    def alpha(self) -> float:
        return float(self.eigenvalues.min())


class _LeastSquares:
    r"""Least squares :math:`\frac1{2n}\|Ax - b\|_2^2` on the fields ``A`` and ``b``: value, gradient, smoothness."""

    A: Tensor
    b: Tensor

    @property
    def beta(self) -> float:
        """Smoothness of the least-squares objective in the Euclidean norm."""
        return float(torch.linalg.matrix_norm(self.A, 2)) ** 2 / self.A.shape[0]

    def _least_squares(self, x: Tensor) -> Tensor:
        r = self.A @ x - self.b
        return 0.5 * (r @ r) / self.A.shape[0]

    def grad(self, x: Tensor) -> Tensor:
        return self.A.T @ (self.A @ x - self.b) / self.A.shape[0]


@dataclass(frozen=True)
class DiagonalQuadratic(_Spectrum):
    r""":math:`f(x) = \frac12\sum_i\lambda_i(x_i - x^*_i)^2`, :math:`f^* = 0`."""

    eigenvalues: Tensor
    minimizer: Tensor
    f_star: float = 0.0

    def value(self, x: Tensor) -> Tensor:
        return 0.5 * (self.eigenvalues * (x - self.minimizer) ** 2).sum()

    def grad(self, x: Tensor) -> Tensor:
        return self.eigenvalues * (x - self.minimizer)


def power_law_quadratic(dim: int = 2000, exponent: float = 0.05, lam_min: float = 1e-8, beta: float = 1.0
                        ) -> DiagonalQuadratic:
    r"""Eigenvalues log-spaced in ``[lam_min, beta]`` and :math:`(x^*_i)^2 = \lambda_i^{a}\Delta` (``a`` =
    ``exponent``, :math:`\Delta` the log-spacing), so that the spectral measure :math:`\sum_i\lambda_i (x^*_i)^2
    \delta_{\lambda_i}` has density :math:`\propto\lambda^a` and :math:`\|x^*\|^2 \approx 1/a` stays bounded.

    From ``x0 = 0``, :math:`f(x_t) - f^* \approx C t^{-(1+a)}` for GD with step :math:`1/\beta` and
    :math:`\approx C' t^{-2(1+a)}` for Nesterov's AGD, while :math:`t^2 \ll \beta/\lambda_{\min}` — the
    :math:`1/t` and :math:`1/t^2` worst-case rates of Bubeck's Theorems 3.3 and 3.19 up to the small ``a``
    (a fixed quadratic with finite :math:`\|x^*\|` is always slightly faster than the worst case).
    """
    if dim < 2 or not 0 < exponent < 1 or not 0 < lam_min < beta:
        raise ValueError("need dim >= 2, 0 < exponent < 1 and 0 < lam_min < beta.")
    lam = torch.logspace(math.log10(lam_min), math.log10(beta), dim, dtype=torch.float64)
    spacing = math.log(beta / lam_min) / (dim - 1)
    return DiagonalQuadratic(lam, (lam**exponent * spacing).sqrt())


def simplex_center_quadratic(n: int = 10_000) -> DiagonalQuadratic:
    r""":math:`f(x) = \frac12\|x - \frac1n\mathbf 1\|^2` on the simplex :math:`\Delta_n`, optimum 0 at the centre.

    Frank–Wolfe's hard case (Jaggi 2013, Lemma 3): a point that is a convex combination of ``t`` vertices has
    :math:`f \ge \frac12(\frac1t - \frac1n)`, so from a vertex no run of ``t < n`` steps beats :math:`1/(2t)`,
    which shows the :math:`1/t` of Bubeck's Theorem 3.8 as a slope of -1.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}.")
    return DiagonalQuadratic(torch.ones(n, dtype=torch.float64), torch.full((n,), 1.0 / n, dtype=torch.float64))


@dataclass(frozen=True)
class Quadratic(_Spectrum):
    r""":math:`f(x) = \frac12(x - x^*)^\top H(x - x^*)`, :math:`f^* = 0`, spectrum ``eigenvalues``."""

    H: Tensor
    minimizer: Tensor
    eigenvalues: Tensor
    f_star: float = 0.0

    def value(self, x: Tensor) -> Tensor:
        d = x - self.minimizer
        return 0.5 * d @ (self.H @ d)

    def grad(self, x: Tensor) -> Tensor:
        return self.H @ (x - self.minimizer)


def ill_conditioned_quadratic(dim: int = 50, alpha: float = 0.01, beta: float = 1.0, seed: int = 0) -> Quadratic:
    """A randomly rotated quadratic whose eigenvalues are geometric from ``alpha`` to ``beta`` (both included),
    minimizer ``N(0, I)``."""
    if not 0 < alpha <= beta:
        raise ValueError(f"need 0 < alpha <= beta, got alpha={alpha}, beta={beta}.")
    g = torch.Generator().manual_seed(seed)
    lam = torch.logspace(math.log10(alpha), math.log10(beta), dim, dtype=torch.float64)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    H = (q * lam) @ q.T
    return Quadratic((H + H.T) / 2, torch.randn(dim, generator=g, dtype=torch.float64), lam)


@dataclass(frozen=True)
class Lasso(_LeastSquares):
    r""":math:`F(x) = \frac1{2n}\|Ax - b\|^2 + \lambda\|x\|_1` (scikit-learn's ``Lasso`` objective without
    intercept). ``f`` is the smooth part, ``beta`` its smoothness :math:`\|A\|^2/n`."""

    A: Tensor
    b: Tensor
    lam: float

    def f(self, x: Tensor) -> Tensor:
        return self._least_squares(x)

    def value(self, x: Tensor) -> Tensor:
        return self.f(x) + self.lam * x.abs().sum()

    def sklearn_solution(self, tol: float = 1e-14, max_iter: int = 1_000_000) -> Tensor:
        """scikit-learn's coordinate-descent ``Lasso(alpha=lam, fit_intercept=False)`` solution."""
        from sklearn.linear_model import Lasso as SkLasso

        model = SkLasso(alpha=self.lam, fit_intercept=False, tol=tol, max_iter=max_iter)
        model.fit(self.A.numpy(), self.b.numpy())
        return torch.as_tensor(model.coef_, dtype=torch.float64)


def lasso(n: int = 100, dim: int = 40, lam: float = 0.05, sparsity: int = 5, noise: float = 0.1, seed: int = 0
          ) -> Lasso:
    """Gaussian design ``n x dim``, a ``sparsity``-sparse planted vector, Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, dim, generator=g, dtype=torch.float64)
    w = torch.zeros(dim, dtype=torch.float64)
    w[:sparsity] = torch.randn(sparsity, generator=g, dtype=torch.float64) * 2
    b = A @ w + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return Lasso(A, b, lam)


@dataclass(frozen=True)
class Logistic:
    r""":math:`f(w) = \frac1n\sum_i\log(1 + e^{-y_i a_i^\top w}) + \frac\mu2\|w\|^2`, labels in ``{-1, +1}``;
    ``minimizer`` and ``f_star`` by Newton's method to machine precision."""

    A: Tensor
    y: Tensor
    reg: float
    minimizer: Tensor
    f_star: float

    @property
    def beta(self) -> float:
        return float(torch.linalg.matrix_norm(self.A, 2)) ** 2 / (4 * self.A.shape[0]) + self.reg

    @property
    def alpha(self) -> float:
        return self.reg

    def value(self, w: Tensor) -> Tensor:
        return torch.nn.functional.softplus(-self.y * (self.A @ w)).mean() + 0.5 * self.reg * (w @ w)

    def grad(self, w: Tensor) -> Tensor:
        s = torch.sigmoid(-self.y * (self.A @ w))
        return -(self.A.T @ (self.y * s)) / self.A.shape[0] + self.reg * w


def logistic(n: int = 200, dim: int = 10, reg: float = 1e-2, seed: int = 0) -> Logistic:
    """Gaussian features, labels from a random logistic model; the optimum from 50 Newton steps."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, dim, generator=g, dtype=torch.float64)
    w_true = torch.randn(dim, generator=g, dtype=torch.float64)
    y = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(A @ w_true), 1.0, -1.0)
    w = torch.zeros(dim, dtype=torch.float64)
    for _ in range(50):
        z = y * (A @ w)
        s = torch.sigmoid(-z)
        grad = -(A.T @ (y * s)) / n + reg * w
        hess = (A.T * (s * (1 - s))) @ A / n + reg * torch.eye(dim, dtype=torch.float64)
        w = w - torch.linalg.solve(hess, grad)
    problem = Logistic(A, y, reg, w, 0.0)
    return Logistic(A, y, reg, w, float(problem.value(w)))


@dataclass(frozen=True)
class PlantedRegression(_LeastSquares):
    r"""Least squares :math:`\frac1{2n}\|Ax - b\|_2^2` (``value``/``grad``) and least absolute deviations
    :math:`\frac1n\|Ax - b\|_1` (``l1_value``/``l1_subgrad``) with :math:`b = Ax^*`: both have optimum 0 at
    the planted ``minimizer`` (unique when ``A`` has full column rank)."""

    A: Tensor
    b: Tensor
    minimizer: Tensor
    f_star: float = 0.0

    @property
    def beta_l1(self) -> float:
        r"""Smoothness of the least squares w.r.t. :math:`\|\cdot\|_1`: :math:`\max_{ij}|(A^\top A)_{ij}|/n`."""
        return float((self.A.T @ self.A).abs().max()) / self.A.shape[0]

    @property
    def lipschitz_inf(self) -> float:
        r"""Bound on :math:`\|g\|_\infty` for the subgradients of the l1 objective: :math:`\max_j\|A_{:,j}\|_1/n`."""
        return float(self.A.abs().sum(0).max()) / self.A.shape[0]

    @property
    def lipschitz_2(self) -> float:
        r"""Bound on :math:`\|g\|_2` for the subgradients of the l1 objective: :math:`\|A\|_2\sqrt n/n`."""
        return float(torch.linalg.matrix_norm(self.A, 2)) / math.sqrt(self.A.shape[0])

    def value(self, x: Tensor) -> Tensor:
        return self._least_squares(x)

    def l1_value(self, x: Tensor) -> Tensor:
        return (self.A @ x - self.b).abs().sum() / self.A.shape[0]

    def l1_subgrad(self, x: Tensor) -> Tensor:
        return self.A.T @ torch.sign(self.A @ x - self.b) / self.A.shape[0]


def simplex_least_squares(n: int = 60, dim: int = 30, support: int = 5, seed: int = 0) -> PlantedRegression:
    """``A ~ N(0, 1)``, planted solution on a ``support``-sparse face of the simplex (so it lies on the boundary)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x = torch.zeros(dim, dtype=torch.float64)
    w = torch.rand(support, generator=g, dtype=torch.float64) + 0.5
    x[torch.randperm(dim, generator=g)[:support]] = w / w.sum()
    return PlantedRegression(A, A @ x, x)


def l1_regression(n: int = 60, dim: int = 20, seed: int = 0, on_simplex: bool = False) -> PlantedRegression:
    """Least absolute deviations with planted solution ``N(0, I)`` (or, ``on_simplex``, a dense simplex point)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, dim, generator=g, dtype=torch.float64)
    if on_simplex:
        x = torch.rand(dim, generator=g, dtype=torch.float64) + 0.5
        x = x / x.sum()
    else:
        x = torch.randn(dim, generator=g, dtype=torch.float64)
    return PlantedRegression(A, A @ x, x)
