"""Shuffle-private stochastic convex optimization (library code: numpy/torch only).

* :mod:`~memopt.privacy.summation` — the vector-summation protocol: randomizer, shuffler, analyzer.
* :mod:`~memopt.privacy.accountant` — the protocol's derived ``(epsilon, delta)`` and its calibration; the
  Gaussian mechanism's exact privacy profile.
* :mod:`~memopt.privacy.baselines` — aggregators: non-private, central Gaussian, local Gaussian, shuffle.
* :mod:`~memopt.privacy.sco` — one-pass private mini-batch SGD through an aggregator.
"""

from memopt.privacy.accountant import ShuffleGuarantee, calibrate, gaussian_sigma, guarantee
from memopt.privacy.baselines import CentralGaussian, ExactSum, LocalGaussian, ShuffleSum
from memopt.privacy.sco import SCOResult, private_sgd
from memopt.privacy.summation import SummationParameters, analyze, private_sum, protocol_sum, randomize, shuffle

__all__ = [
    "CentralGaussian",
    "ExactSum",
    "LocalGaussian",
    "SCOResult",
    "ShuffleGuarantee",
    "ShuffleSum",
    "SummationParameters",
    "analyze",
    "calibrate",
    "gaussian_sigma",
    "guarantee",
    "private_sgd",
    "private_sum",
    "protocol_sum",
    "randomize",
    "shuffle",
]
