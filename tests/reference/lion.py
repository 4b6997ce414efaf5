"""Lion, paper-literal (Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
arXiv 2302.06675, Algorithm 2). Written from the paper's pseudocode; never imports memopt.

With gradient ``g_t``, interpolation ``beta1``, momentum decay ``beta2``, learning rate ``eta`` and
decoupled weight decay ``lambda``::

    c_t     = beta1 * m_{t-1} + (1 - beta1) * g_t
    theta_t = theta_{t-1} - eta * (sign(c_t) + lambda * theta_{t-1})
    m_t     = beta2 * m_{t-1} + (1 - beta2) * g_t

``m_0 = 0``; ``sign(0) = 0``. One state tensor (``m``) per parameter.
"""

from collections.abc import Sequence

import torch


def lion_run(
    theta0: torch.Tensor,
    grads: Sequence[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every iterate after each of ``grads`` (fixed in advance), and the final momentum ``m``."""
    theta, m = theta0.clone(), torch.zeros_like(theta0)
    out = []
    for g in grads:
        c = beta1 * m + (1 - beta1) * g
        theta = theta - lr * (torch.sign(c) + weight_decay * theta)
        m = beta2 * m + (1 - beta2) * g
        out.append(theta)
    return out, m
