"""Convex and saddle-point solvers over torch tensors, each a short function with its paper's update rule.

Library code: imports torch and numpy only. Every solver returns a :class:`~memopt.convex.history.Result`
(answer + :class:`~memopt.convex.history.History`).

* :mod:`~memopt.convex.smooth` — gradient descent, Nesterov's AGD (smooth; smooth + strongly convex).
* :mod:`~memopt.convex.nonsmooth` — projected subgradient descent.
* :mod:`~memopt.convex.cutting_plane` — ellipsoid method, center of gravity (2-D).
* :mod:`~memopt.convex.mirror` — mirror maps, mirror descent, dual averaging, mirror prox.
* :mod:`~memopt.convex.frank_wolfe` — conditional gradient with linear minimization oracles.
* :mod:`~memopt.convex.composite` — ISTA / FISTA, proximal operators, the :class:`FISTA` optimizer.
* :mod:`~memopt.convex.stochastic` — SGD with averaging, mini-batches, SVRG.
* :mod:`~memopt.convex.saddle` — GDA, extragradient, LPD, ALPD, inexact ALPD.
* :mod:`~memopt.convex.sets` — projections onto balls, boxes, the simplex.
* :mod:`~memopt.convex.rates` — fitting log-log slopes and linear contraction factors.
"""

from memopt.convex.composite import FISTA, fista, ista, prox_l1, prox_l1_nonneg, prox_nonneg, soft_threshold
from memopt.convex.cutting_plane import center_of_gravity_2d, ellipsoid
from memopt.convex.frank_wolfe import frank_wolfe, l1_ball_lmo, simplex_lmo
from memopt.convex.history import History, Result
from memopt.convex.mirror import (
    EntropySimplex,
    EuclideanMap,
    MirrorMap,
    ProductMap,
    dual_averaging,
    mirror_descent,
    mirror_prox,
)
from memopt.convex.nonsmooth import strongly_convex_steps, subgradient_descent
from memopt.convex.rates import contraction, loglog_slope, rate_exponent_ratio
from memopt.convex.saddle import (
    SaddleOracles,
    alpd,
    extragradient,
    gradient_descent_ascent,
    inexact_alpd,
    lpd,
)
from memopt.convex.sets import project_ball, project_box, project_nonneg_ball, project_simplex
from memopt.convex.smooth import gradient_descent, nesterov_agd, nesterov_agd_strongly_convex
from memopt.convex.stochastic import sgd, svrg

__all__ = [
    "FISTA",
    "EntropySimplex",
    "EuclideanMap",
    "History",
    "MirrorMap",
    "ProductMap",
    "Result",
    "SaddleOracles",
    "alpd",
    "center_of_gravity_2d",
    "contraction",
    "dual_averaging",
    "ellipsoid",
    "extragradient",
    "fista",
    "frank_wolfe",
    "gradient_descent",
    "gradient_descent_ascent",
    "inexact_alpd",
    "ista",
    "l1_ball_lmo",
    "loglog_slope",
    "lpd",
    "mirror_descent",
    "mirror_prox",
    "nesterov_agd",
    "nesterov_agd_strongly_convex",
    "project_ball",
    "project_box",
    "project_nonneg_ball",
    "project_simplex",
    "prox_l1",
    "prox_l1_nonneg",
    "prox_nonneg",
    "rate_exponent_ratio",
    "sgd",
    "simplex_lmo",
    "soft_threshold",
    "strongly_convex_steps",
    "subgradient_descent",
    "svrg",
]
