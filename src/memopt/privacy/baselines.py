"""Aggregators of per-user gradients for private SGD: non-private, central Gaussian, local Gaussian, shuffle.

Each maps the ``(m, d)`` clipped per-user vectors of one round to an estimate of their sum, with the randomness
of its privacy model (:mod:`memopt.privacy.sco` runs SGD on top):

* :class:`ExactSum` — no privacy (the non-private SGD baseline);
* :class:`CentralGaussian` — central model, DP-SGD style: a trusted curator adds ``N(0, sigma^2 I)`` once to the
  sum; replacing one user moves the sum by at most ``2B`` in ``l2``, so ``sigma`` is
  :func:`~memopt.privacy.accountant.gaussian_sigma` at sensitivity ``2B``;
* :class:`LocalGaussian` — local model: every user adds ``N(0, sigma^2 I)`` to its own vector before sending it
  (same ``sigma``: any two inputs of the ball differ by at most ``2B``), so the sum carries ``m`` such noises;
* :class:`ShuffleSum` — the shuffle protocol of :mod:`memopt.privacy.summation`, calibrated by
  :func:`~memopt.privacy.accountant.calibrate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from memopt.privacy.accountant import ShuffleGuarantee, calibrate, gaussian_sigma
from memopt.privacy.summation import SummationParameters, private_sum, worst_case_variance


@dataclass
class ExactSum:
    name: str = "non-private"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.sum(0)

    def noise_variance(self, users: int) -> float:
        return 0.0


@dataclass
class _GaussianMechanism:
    """``sigma`` of the Gaussian mechanism for ``(epsilon, delta)`` at ``l2``-sensitivity ``2 bound`` (any two
    inputs of the ``bound`` ball differ by at most ``2 bound``); shared by the central and local models."""

    bound: float
    epsilon: float
    delta: float
    name: str = ""
    sigma: float = field(init=False)

    def __post_init__(self) -> None:
        self.sigma = gaussian_sigma(2 * self.bound, self.epsilon, self.delta)


@dataclass
class CentralGaussian(_GaussianMechanism):
    """Sum plus one ``N(0, sigma^2 I)``; ``sigma`` for ``(epsilon, delta)`` at ``l2``-sensitivity ``2 bound``."""

    name: str = "central Gaussian"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.sum(0) + self.sigma * torch.randn(x.shape[1], generator=generator, dtype=x.dtype)

    def noise_variance(self, users: int) -> float:
        return self.sigma**2


@dataclass
class LocalGaussian(_GaussianMechanism):
    """Every user adds its own ``N(0, sigma^2 I)`` (``(epsilon, delta)``-LDP for inputs in the ``bound`` ball)."""

    name: str = "local Gaussian"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noisy = x + self.sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return noisy.sum(0)

    def noise_variance(self, users: int) -> float:
        return users * self.sigma**2


@dataclass
class ShuffleSum:
    """The shuffle summation protocol, with ``b`` calibrated for ``users`` per round (the batch size)."""

    bound: float
    epsilon: float
    delta: float
    users: int
    dim: int
    name: str = "shuffle"
    guarantee: ShuffleGuarantee = field(init=False)

    def __post_init__(self) -> None:
        self.guarantee = calibrate(self.users, self.dim, self.bound, self.epsilon, self.delta)

    @property
    def params(self) -> SummationParameters:
        return self.guarantee.params

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[0] != self.users:
            raise ValueError(f"the protocol was calibrated for {self.users} users per round, got {x.shape[0]}.")
        return private_sum(x, self.params, generator).to(x.dtype)

    def noise_variance(self, users: int) -> float:
        return worst_case_variance(users, self.params)
