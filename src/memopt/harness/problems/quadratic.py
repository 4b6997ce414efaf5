"""Quadratics ``f(x) = 1/2 x^T A x - b^T x`` with a chosen spectrum, and Nesterov's worst-case quadratic."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Quadratic:
    """``f(x) = 1/2 x^T A x - b^T x`` with symmetric positive semi-definite ``A``.

    ``minimizer`` is a solution of ``A x = b`` (least-norm if ``A`` is singular) and ``f_star`` its value.
    """

    A: torch.Tensor
    b: torch.Tensor
    eigenvalues: torch.Tensor
    minimizer: torch.Tensor
    f_star: float

    @property
    def dim(self) -> int:
        return self.A.shape[0]

    @property
    def mu(self) -> float:
        """The smallest eigenvalue (strong convexity)."""
        return float(self.eigenvalues.min())

    @property
    def L(self) -> float:
        """The largest eigenvalue (smoothness)."""
        return float(self.eigenvalues.max())

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x @ (self.A @ x) - self.b @ x

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.A @ x - self.b

    @classmethod
    def from_matrix(cls, A: torch.Tensor, b: torch.Tensor, eigenvalues: torch.Tensor | None = None) -> Quadratic:
        """The quadratic of ``A`` and ``b`` (``eigenvalues`` of ``A`` if known, else computed)."""
        if eigenvalues is None:
            eigenvalues = torch.linalg.eigvalsh(A)
        minimizer = torch.linalg.lstsq(A, b.unsqueeze(1)).solution.squeeze(1)
        f_star = float(0.5 * minimizer @ (A @ minimizer) - b @ minimizer)
        return cls(A, b, eigenvalues, minimizer, f_star)

    @classmethod
    def with_spectrum(
        cls, eigenvalues: torch.Tensor, seed: int = 0, rotate: bool = True, dtype: torch.dtype = torch.float64
    ) -> Quadratic:
        """``A = Q diag(eigenvalues) Q^T`` with a random orthogonal ``Q`` (identity if not ``rotate``) and
        ``b ~ N(0, I)``, both drawn from ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        eigenvalues = eigenvalues.to(dtype)
        d = eigenvalues.numel()
        if rotate:
            q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=dtype))
            q = q * torch.sign(torch.diagonal(r))
        else:
            q = torch.eye(d, dtype=dtype)
        A = (q * eigenvalues) @ q.T
        b = torch.randn(d, generator=generator, dtype=dtype)
        return cls.from_matrix((A + A.T) / 2, b, eigenvalues)


def worst_case_quadratic(n: int, L: float = 1.0, dtype: torch.dtype = torch.float64) -> Quadratic:
    """Nesterov's hard function ``f(x) = L/4 (1/2 [x_1^2 + sum (x_i - x_{i+1})^2 + x_n^2] - x_1)``.

    Convex and ``L``-smooth (its Hessian ``L/4 * tridiag(-1, 2, -1)`` has eigenvalues in (0, L)); the
    minimiser is ``x*_i = 1 - i/(n+1)``. From ``x0 = 0`` any first-order method needs on the order of
    ``sqrt(L ||x0 - x*||^2 / eps)`` gradients while fewer than ``n/2`` have been used (Nesterov, Lectures on
    Convex Optimization, Thm. 2.1.7), so accelerated methods show their ``eps^-1/2`` and gradient descent its
    ``eps^-1`` there.
    """
    T = 2 * torch.eye(n, dtype=dtype) - torch.diag(torch.ones(n - 1, dtype=dtype), 1)
    T = T - torch.diag(torch.ones(n - 1, dtype=dtype), -1)
    A = (L / 4) * T
    b = torch.zeros(n, dtype=dtype)
    b[0] = L / 4
    return Quadratic.from_matrix(A, b)
