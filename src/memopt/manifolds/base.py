"""The interface every manifold of :mod:`memopt.manifolds` implements, and the checks they share.

A manifold describes the points of a tensor whose last :attr:`Manifold.ndim` dimensions form one point
(a row of an embedding table on the Poincaré ball, one matrix on the Stiefel manifold); the leading
dimensions are a batch of independent points, i.e. a *product* of copies of the manifold. The Riemannian
optimizers (:mod:`memopt.riemannian`) need, for a point ``x`` and tangent vectors ``u``, ``v``:

* ``projx(x)``: the closest point of the manifold (used to re-project drifting points);
* ``proju(x, u)``: the orthogonal projection of an ambient vector onto the tangent space at ``x``;
* ``egrad2rgrad(x, g)``: the Riemannian gradient from the Euclidean one (``G_x^{-1} g`` projected);
* ``inner(x, u, v)`` and ``norm(x, u)``: the metric, reduced over each point;
* ``component_inner(x, u)``: ``||u||_x^2`` per product factor, the quantity Bécigneul & Ganea (ICLR 2019)
  accumulate for adaptivity, with :meth:`component_shape` / :meth:`expand_components` to store and
  broadcast it;
* ``retr(x, u)`` and ``expmap(x, u)``: a retraction and the exponential map;
* ``transp(x, y, v)``: the transport of ``v`` from ``T_x M`` to ``T_y M`` that the optimizer uses (parallel
  transport, or a vector transport where documented), and ``retr_transp``;
* ``random(*shape)``: a random point; ``check_point(x)``: why ``x`` is not on the manifold (or None).

Tolerances (:data:`ATOL`) depend on the dtype; float32 points are checked to ``1e-4``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

#: absolute tolerance of :meth:`Manifold.check_point` by dtype
ATOL: dict[torch.dtype, float] = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.bfloat16: 3e-2,
    torch.float16: 3e-3,
}
#: the smallest norm used as a divisor (guards 0/0 for zero tangent vectors)
MIN_NORM = 1e-15


def atol_for(dtype: torch.dtype) -> float:
    """The tolerance of :meth:`Manifold.check_point` for ``dtype``."""
    return ATOL.get(dtype, 1e-4)


def generator_randn(shape: Sequence[int], dtype: torch.dtype, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal samples of ``shape`` from ``generator`` (the global one when None)."""
    return torch.randn(tuple(shape), dtype=dtype, generator=generator)


class Manifold(ABC):
    """A Riemannian manifold whose points are the last :attr:`ndim` dimensions of a tensor."""

    #: how many trailing dimensions make one point (0: every entry is a point of the real line)
    ndim: int = 1
    #: a short name for messages
    name: str = "manifold"

    # --------------------------------------------------------------------------------------- shapes
    def check_shape(self, shape: Sequence[int]) -> str | None:
        """Why a tensor of ``shape`` cannot hold points of this manifold (None if it can)."""
        if len(shape) < self.ndim:
            return f"{self.name} points have {self.ndim} dimension(s), the tensor has shape {tuple(shape)}"
        return None

    def component_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of :meth:`component_inner` for a tensor of ``shape``: one entry per point (keepdim)."""
        shape = tuple(shape)
        return shape[: len(shape) - self.ndim] + (1,) * self.ndim

    def expand_components(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``values`` (of :meth:`component_shape`) broadcastable against ``x``."""
        return values

    def _sum_point(self, t: torch.Tensor, keepdim: bool) -> torch.Tensor:
        """Sum over the dimensions of one point."""
        if self.ndim == 0:
            return t
        return t.sum(dim=tuple(range(-self.ndim, 0)), keepdim=keepdim)

    # ----------------------------------------------------------------------------------- the metric
    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None = None, *, keepdim: bool = False):
        """``<u, v>_x`` per point (Euclidean ambient inner product unless overridden)."""
        v = u if v is None else v
        return self._sum_point(u * v, keepdim)

    def norm(self, x: torch.Tensor, u: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """``||u||_x`` per point."""
        return self.inner(x, u, keepdim=keepdim).clamp_min(0).sqrt()

    def component_inner(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``||u||_x^2`` per product factor (per point), shaped :meth:`component_shape`."""
        return self.inner(x, u, keepdim=True)

    # ------------------------------------------------------------------------------ the operations
    @abstractmethod
    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """The closest point of the manifold to ``x``."""

    @abstractmethod
    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The projection of the ambient vector ``u`` onto ``T_x M``."""

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The Riemannian gradient for the Euclidean gradient ``g`` (embedded metric: ``proju``)."""
        return self.proju(x, g)

    @abstractmethod
    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The retraction the optimizers step with (documented per manifold)."""

    @abstractmethod
    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The exponential map ``exp_x(u)``."""

    @abstractmethod
    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The transport of ``v`` from ``T_x M`` to ``T_y M`` used with :meth:`retr`."""

    def retr_transp(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y = retr(x, u)`` and ``v`` transported to ``T_y M``."""
        y = self.retr(x, u)
        return y, self.transp(x, y, v)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The geodesic distance per point."""
        raise NotImplementedError(f"{self.name} has no closed-form distance")

    @abstractmethod
    def random(self, *shape: int, dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None):
        """A random point (or batch of points) of ``shape``."""

    @abstractmethod
    def _point_error(self, x: torch.Tensor) -> tuple[float, str]:
        """The largest violation of the constraint over the points of ``x`` and what it measures."""

    def check_point(self, x: torch.Tensor, atol: float | None = None) -> str | None:
        """Why ``x`` is not a batch of points of this manifold (None if it is, within ``atol``)."""
        problem = self.check_shape(x.shape)
        if problem is not None:
            return problem
        if not bool(torch.isfinite(x).all()):
            return "it holds NaN or Inf values"
        error, what = self._point_error(x.detach())
        tolerance = atol_for(x.dtype) if atol is None else atol
        if not error <= tolerance:
            return f"{what} is off by {error:.3g} (tolerance {tolerance:.1g})"
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
