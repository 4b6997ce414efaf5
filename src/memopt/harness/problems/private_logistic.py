"""Logistic regression with features in the unit ball, one example per user (for the shuffle-private study).

Loss ``l(theta; a, y) = log(1 + exp(-y a^T theta))`` with ``||a|| <= 1``: its gradient ``-y a sigmoid(-y a^T theta)``
has norm at most 1, so no clipping is needed at bound 1. Labels come from a logistic model ``theta_true``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class UnitBallLogistic:
    """``a`` ``(n, d)`` with row norms ``<= 1``, labels ``y`` in {-1, +1} (float64)."""

    a: torch.Tensor
    y: torch.Tensor

    def risk(self, theta: torch.Tensor) -> float:
        """Average loss at ``theta``."""
        return float(torch.nn.functional.softplus(-self.y * (self.a @ theta)).mean())

    def per_user_grads(self, theta: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        a, y = self.a[index], self.y[index]
        return -(y * torch.sigmoid(-y * (a @ theta)))[:, None] * a

    def minimizer(self, steps: int = 50) -> torch.Tensor:
        """Newton's method on the average loss (strictly convex for these data)."""
        theta = torch.zeros(self.a.shape[1], dtype=torch.float64)
        for _ in range(steps):
            s = torch.sigmoid(self.y * (self.a @ theta))
            grad = -(self.y * (1 - s)) @ self.a / len(self.y)
            hess = (self.a * (s * (1 - s))[:, None]).T @ self.a / len(self.y)
            theta = theta - torch.linalg.solve(hess, grad)
        return theta


def unit_ball_logistic(users: int, dim: int, theta_true: torch.Tensor, seed: int = 0) -> UnitBallLogistic:
    """Directions uniform on the sphere, radii uniform in [0, 1], labels ``P(y = 1) = sigmoid(a^T theta_true)``."""
    if users < 1 or dim < 1:
        raise ValueError(f"users and dim must be >= 1, got users={users}, dim={dim}.")
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(users, dim, generator=g, dtype=torch.float64)
    a = a / a.norm(dim=1, keepdim=True) * torch.rand(users, 1, generator=g, dtype=torch.float64)
    p = torch.sigmoid(a @ theta_true.to(torch.float64))
    y = torch.where(torch.rand(users, generator=g, dtype=torch.float64) < p, 1.0, -1.0).to(torch.float64)
    return UnitBallLogistic(a, y)
