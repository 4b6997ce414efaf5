"""Accelerated and variance-reduced optimizers.

* :class:`NAGGS` — NAG-GS (arXiv 2209.14937), gamma updated or fixed; :func:`naggs_optimal_step`.
* :class:`MetaSTORM`, :class:`STORMPlus` — adaptive STORM variance reduction (arXiv 2209.14853,
  2111.01040); closure-based (two gradients of one minibatch per step).
* :class:`QuasarAGD`, :class:`NesterovAGD` — AGD for quasar-convex functions with its line search
  (arXiv 1906.11985) and its gamma = 1 case; closure-based, deterministic.
* :class:`ASGD`, :class:`FourParameterASGD` — accelerated SGD for least squares (arXiv 1704.08227).
* :func:`effective_lr` — the SGD learning rate that small-lr SGD with momentum matches (arXiv 2307.15196).

Optimizers with ``needs_closure = True`` must be stepped as ``optimizer.step(closure)``.
"""

from memopt.accelerated.asgd import ASGD, FourParameterASGD, accsgd_to_four_parameter
from memopt.accelerated.momentum import effective_lr
from memopt.accelerated.nag_gs import NAGGS, heavy_ball_coefficients
from memopt.accelerated.nag_gs import optimal_step as naggs_optimal_step
from memopt.accelerated.nag_gs import stability_limit as naggs_stability_limit
from memopt.accelerated.quasar_agd import NesterovAGD, QuasarAGD, binary_line_search
from memopt.accelerated.storm import MetaSTORM, STORMPlus

__all__ = [
    "ASGD",
    "NAGGS",
    "FourParameterASGD",
    "MetaSTORM",
    "NesterovAGD",
    "QuasarAGD",
    "STORMPlus",
    "accsgd_to_four_parameter",
    "binary_line_search",
    "effective_lr",
    "heavy_ball_coefficients",
    "naggs_optimal_step",
    "naggs_stability_limit",
]
