"""Test problems with known structure, generated locally (nothing is downloaded).

* :mod:`~memopt.harness.problems.quadratic` — quadratics with a chosen spectrum; Nesterov's worst-case quadratic.
* :mod:`~memopt.harness.problems.logistic` — L2-regularised logistic regression.
* :mod:`~memopt.harness.problems.quasar` — quasar-convex functions with a known gamma.
* :mod:`~memopt.harness.problems.nonconvex` — a noisy non-convex finite sum with a minibatch oracle.
* :mod:`~memopt.harness.problems.least_squares` — streaming least squares, excess risk per eigen-subspace.
* :mod:`~memopt.harness.problems.modular` — modular arithmetic (``x * y mod 97``) and a small model for it.
"""

from memopt.harness.problems.least_squares import LinearRegressionStream, power_law_stream
from memopt.harness.problems.logistic import LogisticRegression, logistic_regression
from memopt.harness.problems.modular import ModularMLP, ModularSplit, modular_arithmetic
from memopt.harness.problems.nonconvex import NoisyNonconvexSum, noisy_nonconvex_sum
from memopt.harness.problems.quadratic import Quadratic, worst_case_quadratic
from memopt.harness.problems.quasar import SeparableQuasar, bump, bump_problem, sine_problem, sine_quadratic

__all__ = [
    "LinearRegressionStream",
    "LogisticRegression",
    "ModularMLP",
    "ModularSplit",
    "NoisyNonconvexSum",
    "Quadratic",
    "SeparableQuasar",
    "bump",
    "bump_problem",
    "logistic_regression",
    "modular_arithmetic",
    "noisy_nonconvex_sum",
    "power_law_stream",
    "sine_problem",
    "sine_quadratic",
    "worst_case_quadratic",
]
