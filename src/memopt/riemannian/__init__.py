"""Riemannian optimizers (Bécigneul & Ganea, "Riemannian Adaptive Optimization Methods", ICLR 2019).

* :class:`RiemannianSGD` — RSGD with transported (Nesterov) momentum;
* :class:`RiemannianAdam` — RADAM (``amsgrad=True``: RAMSGRAD), one second moment per product factor;
* :class:`RiemannianAMSGrad` — RAMSGRAD;
* :class:`RiemannianAdagrad` — RADAGRAD.

Parameters are :class:`memopt.manifolds.ManifoldParameter` s (stepped on their manifold) or plain tensors
(Euclidean: the optimizers then equal ``torch.optim.SGD`` / ``Adam`` / ``Adagrad``).
"""

from memopt.riemannian.adagrad import RiemannianAdagrad
from memopt.riemannian.adam import RiemannianAdam, RiemannianAMSGrad
from memopt.riemannian.sgd import RiemannianSGD

__all__ = ["RiemannianAMSGrad", "RiemannianAdagrad", "RiemannianAdam", "RiemannianSGD"]
