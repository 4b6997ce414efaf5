"""The Stiefel manifold ``St(n, p) = {X in R^{n x p} : X^T X = I_p}`` of orthonormal frames (``n >= p``).

Two metrics, as in geoopt (Edelman, Arias & Smith 1998; Wen & Yin 2013 for the Cayley transform):

* ``canonical=True`` (default): ``<U, V>_X = tr(U^T (I - X X^T / 2) V)``; ``rgrad = G - X G^T X``; the
  retraction is the **Cayley transform** ``Y = (I - A/2)^{-1} (I + A/2) X`` with the skew ``A = U X^T -
  X U^T``, and the transport applies the same orthogonal operator to ``V``. That operator is an isometry of
  the canonical metric, so the transport preserves inner products. ``expmap`` is the Cayley retraction
  (the canonical geodesic is not computed).
* ``canonical=False``: the Euclidean metric ``tr(U^T V)``; ``rgrad = proju(X, G)``; the retraction is the
  QR factor of ``X + U`` with ``diag(R) >= 0``; ``expmap`` is the Euclidean-metric geodesic
  ``[X, U] expm([[X^T U, -U^T U], [I, X^T U]]) [expm(-X^T U); 0]``; the transport projects onto the new
  tangent space (a vector transport, not an isometry).

``proju(X, U) = U - X sym(X^T U)`` is the orthogonal projection onto the tangent space in both cases and
``projx`` is the polar factor ``U V^T`` of the thin SVD (the closest frame).
"""

from __future__ import annotations

import torch

from memopt.manifolds.base import Manifold, generator_randn


def _sym(a: torch.Tensor) -> torch.Tensor:
    return (a + a.transpose(-1, -2)) / 2


class Stiefel(Manifold):
    """Orthonormal ``n x p`` frames in the last two dimensions (``n >= p``)."""

    ndim = 2
    name = "Stiefel"

    def __init__(self, canonical: bool = True) -> None:
        self.canonical = canonical

    def check_shape(self, shape):
        problem = super().check_shape(shape)
        if problem is None and shape[-2] < shape[-1]:
            n, p = shape[-2], shape[-1]
            problem = (
                f"a Stiefel point is an n x p frame with n >= p (orthonormal columns); the last two dimensions "
                f"are {n} x {p}. Store the transpose (shape (..., {p}, {n}))"
            )
        return problem

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        u, _, vh = torch.linalg.svd(x, full_matrices=False)
        return u @ vh

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u - x @ _sym(x.transpose(-1, -2) @ u)

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.canonical:
            return g - x @ g.transpose(-1, -2) @ x
        return self.proju(x, g)

    def inner(self, x, u, v=None, *, keepdim=False):
        v = u if v is None else v
        if self.canonical:
            prod = (u * v).sum((-2, -1)) - 0.5 * ((x.transpose(-1, -2) @ u) * (x.transpose(-1, -2) @ v)).sum((-2, -1))
        else:
            prod = (u * v).sum((-2, -1))
        return prod[..., None, None] if keepdim else prod

    def _cayley(self, x: torch.Tensor, u: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        """``(I - A/2)^{-1} (I + A/2)`` applied to ``[x, *others]`` (one solve), ``A = u x^T - x u^T``."""
        a = u @ x.transpose(-1, -2) - x @ u.transpose(-1, -2)
        eye = torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
        rhs = torch.cat([x, *others], dim=-1)
        return torch.linalg.solve(eye - a / 2, rhs + a @ rhs / 2)

    def _qr_retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        q, r = torch.linalg.qr(x + u)
        sign = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) >= 0, 1.0, -1.0).to(q.dtype)
        return q * sign.unsqueeze(-2)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._cayley(x, u) if self.canonical else self._qr_retr(x, u)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.canonical:
            return self._cayley(x, u)
        p = x.shape[-1]
        xtu = x.transpose(-1, -2) @ u
        utu = u.transpose(-1, -2) @ u
        eye = torch.eye(p, dtype=x.dtype, device=x.device).expand_as(xtu)
        block = torch.cat([torch.cat([xtu, -utu], -1), torch.cat([eye, xtu], -1)], -2)
        tail = torch.cat([torch.linalg.matrix_exp(-xtu), torch.zeros_like(xtu)], -2)
        return torch.cat([x, u], -1) @ torch.linalg.matrix_exp(block) @ tail

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.canonical:
            raise NotImplementedError(
                "the canonical Stiefel transport is defined with the step that produced y; use retr_transp(x, u, v)"
            )
        return self.proju(y, v)

    def retr_transp(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.canonical:
            return super().retr_transp(x, u, v)
        both = self._cayley(x, u, v)
        p = x.shape[-1]
        return both[..., :p], both[..., p:]

    def random(self, *shape: int, dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None):
        problem = self.check_shape(shape)
        if problem is not None:
            raise ValueError(f"Stiefel.random{tuple(shape)}: {problem}.")
        return self._qr_retr(generator_randn(shape, dtype, generator), torch.zeros(shape, dtype=dtype))

    def _point_error(self, x: torch.Tensor) -> tuple[float, str]:
        if not x.numel():
            return 0.0, ""
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        return float((x.transpose(-1, -2) @ x - eye).abs().max()), "X^T X - I of a frame (must be 0)"

    def __repr__(self) -> str:
        return f"Stiefel(canonical={self.canonical})"
