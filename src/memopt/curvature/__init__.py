"""Curvature-informed optimizers: PSGD with Lie-group preconditioners fitted online.

* :class:`PSGDKron` — a Kronecker-product preconditioner per parameter (one triangular or diagonal factor per
  dimension; kron-torch / psgd-torch ``Kron``);
* :class:`PSGDLRA` — a low-rank approximation ``Q = (I + U V^T) diag(d)`` per parameter (psgd-torch ``LRA``);
* :class:`PSGDDiag` — a diagonal ``Q = diag(d)``.

Xi-Lin Li, "Preconditioned Stochastic Gradient Descent", arXiv 1512.04202; Pooladzandi & Li, "Curvature-Informed
SGD via General Purpose Lie-Group Preconditioners", arXiv 2402.04553. The shared loop (whitening pairs without a
closure, Newton pairs with Hessian-vector products through ``step(closure)``, the update schedule, FSDP2):
:mod:`memopt.curvature.base`.
"""

from memopt.curvature.diag import PSGDDiag
from memopt.curvature.kron import PSGDKron
from memopt.curvature.lra import PSGDLRA

__all__ = ["PSGDLRA", "PSGDDiag", "PSGDKron"]
