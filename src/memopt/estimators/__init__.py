"""Estimators: the interchangeable parts an adaptive update is assembled from, registered by name
(:func:`memopt.estimators.registry.register_estimator`).

* momentum estimators (the numerator): none, EMA, heavy ball, Subspace-Momentum (with its projectors);
* second-moment estimators (the denominator): none, coordinate-wise, Subset-Norm, AdaGrad-Norm, extreme
  tensoring.

They hold no state of their own: every tensor lives in ``optimizer.state[p]``, created and read through a
state format (:mod:`memopt.state`).
"""

import importlib
import pkgutil

# every module of this package, so that each estimator's @register_estimator runs: a new estimator is one
# new file here and nothing else
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
