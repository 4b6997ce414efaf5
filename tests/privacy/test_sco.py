"""One-pass private SGD: non-private SGD reaches a small excess risk; bad arguments raise."""

from __future__ import annotations

import pytest
import torch

from memopt.harness.problems.private_logistic import unit_ball_logistic
from memopt.privacy.baselines import ExactSum, ShuffleSum
from memopt.privacy.sco import private_sgd


def test_sgd_through_the_exact_sum_and_the_shuffle_protocol_learns():
    theta_true = torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64)
    train, test = unit_ball_logistic(8192, 3, theta_true, seed=0), unit_ball_logistic(20000, 3, theta_true, seed=1)
    star = test.risk(test.minimizer())
    zero = test.risk(torch.zeros(3, dtype=torch.float64)) - star
    g = torch.Generator().manual_seed(0)
    plain = private_sgd(train.per_user_grads, 8192, 3, 128, 8.0, ExactSum(), 1.0, 6.0, g)
    assert plain.rounds == 64 and test.risk(plain.theta) - star < 0.05 * zero
    shuffled = private_sgd(train.per_user_grads, 8192, 3, 128, 8.0, ShuffleSum(1.0, 4.0, 1e-6, 128, 3), 1.0, 6.0, g)
    assert test.risk(shuffled.theta) - star < 0.2 * zero and shuffled.theta.norm() <= 6.0
    with pytest.raises(ValueError, match="batch"):
        private_sgd(train.per_user_grads, 10, 3, 20, 1.0, ExactSum(), 1.0, 1.0)
    with pytest.raises(ValueError, match="calibrated for 128"):
        ShuffleSum(1.0, 4.0, 1e-6, 128, 3)(torch.zeros(5, 3, dtype=torch.float64))
