"""Estimators: the interchangeable parts an adaptive update is assembled from.

* momentum estimators (the numerator): none, EMA, heavy ball, Subspace-Momentum (with its projectors);
* second-moment estimators (the denominator): none, coordinate-wise, Subset-Norm, AdaGrad-Norm, extreme
  tensoring.

They hold no state of their own: every tensor lives in ``optimizer.state[p]``, created and read through a
state format (:mod:`memopt.state`).
"""
