"""Riemannian manifolds for :mod:`memopt.riemannian`: one small interface (:class:`Manifold`), one file each.

* :class:`Euclidean` — R^n (every coordinate a factor: Riemannian Adam is Adam);
* :class:`Sphere` — unit vectors;
* :class:`Stiefel` — orthonormal frames (canonical metric + Cayley, or Euclidean metric + QR);
* :class:`PoincareBall` — hyperbolic space of curvature ``-c`` in the ball model;
* :class:`Lorentz` — hyperbolic space in the hyperboloid model;
* :class:`Product` — several manifolds in one tensor, one adaptive factor each;
* :class:`ManifoldParameter` — a parameter that knows its manifold.
"""

from memopt.manifolds.base import Manifold
from memopt.manifolds.euclidean import Euclidean
from memopt.manifolds.lorentz import Lorentz
from memopt.manifolds.parameter import ManifoldParameter
from memopt.manifolds.poincare import PoincareBall
from memopt.manifolds.product import Product
from memopt.manifolds.sphere import Sphere
from memopt.manifolds.stiefel import Stiefel

__all__ = ["Euclidean", "Lorentz", "Manifold", "ManifoldParameter", "PoincareBall", "Product", "Sphere", "Stiefel"]
