"""The effective learning rate of SGD with momentum (Wang, Malladi, Wang, Lyu & Li, ICLR 2024).

"The Marginal Value of Momentum for Small Learning Rate SGD", arXiv 2307.15196: when the learning rate is
small and gradient noise dominates, SGD with momentum ``beta`` at learning rate ``lr`` follows (in
distribution, on short and long horizons) plain SGD at the *effective* learning rate below. The momentum
experiment (``memopt experiment momentum``) measures how close the two stay.
"""

from __future__ import annotations

from memopt.validation import check_fraction, check_non_negative


def effective_lr(lr: float, momentum: float, dampening: float = 0.0) -> float:
    """The SGD learning rate that SGD with momentum matches at small ``lr``: ``lr (1 - dampening)/(1 - momentum)``.

    ``torch.optim.SGD`` keeps ``buf = momentum * buf + (1 - dampening) * g`` and steps ``lr * buf``; its
    stationary step for a constant gradient is ``lr (1 - dampening)/(1 - momentum) * g``. So
    ``dampening=0`` (the default, heavy ball) gives ``lr/(1 - momentum)`` and EMA-form momentum
    (``dampening=momentum``) gives ``lr`` itself. Nesterov momentum has the same effective rate.
    """
    check_non_negative("lr", lr)
    check_fraction("momentum", momentum, allow_one=False)
    check_fraction("dampening", dampening, allow_one=True)
    return lr * (1 - dampening) / (1 - momentum)
