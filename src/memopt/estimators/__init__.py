"""Estimators: the interchangeable parts an adaptive update is assembled from, registered by name
(:func:`memopt.estimators.registry.register_estimator`).

* momentum estimators (the numerator): none, EMA, heavy ball, Subspace-Momentum (with its projectors);
* second-moment estimators (the denominator): none, coordinate-wise, Subset-Norm, AdaGrad-Norm, extreme
  tensoring.

They hold no state of their own: every tensor lives in ``optimizer.state[p]``, created and read through a
state format (:mod:`memopt.state`).
"""

# every estimator module, so that its @register_estimator runs (memopt.estimators.registry)
from memopt.estimators import (  # noqa: F401
    adagrad_norm,
    extreme_tensoring,
    momentum,
    second_moment,
    subset_norm,
    subspace_momentum,
)
