"""The META-STORM authors' optimizers and training loop (timmytonga/fastr-public), written from their description.

Their loop, per minibatch ``xi_k`` (``train/train.py``, ``run_epoch_standard``): gradient at the current
point ``y`` -> ``step()`` saves it as ``g_tilde`` and moves ``y <- y - lr d / b`` with the stored ``d`` and
``b`` (on the first call it first initializes ``d = g_tilde``, the accumulators and ``b``) -> gradient of the
same minibatch at the new point, ``g`` -> ``update_momentum_and_lr()`` (skipped on the first call) forms
``d = g + (1 - a)(d - g_tilde)`` and updates the accumulators, ``a`` and ``b``; the loop logs the loss at
the new point. Variants (``optimizers/``): ``fastr_d.py`` (``rule="general"``), ``fastr_n.py``
(``"sg"``), ``stormplus.py`` (``"storm_plus"``); the bias correction ``1 / (1 - beta^k)`` counts calls
of ``step()`` (``storm_base_class.py``, ``get_bias_correction``) and multiplies the accumulator whether
or not it is an EMA. Every accumulator is kept per tensor (or per coordinate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Oracle = Callable[[list[torch.Tensor], object], list[torch.Tensor]]
Loss = Callable[[list[torch.Tensor], object], float]


def authors_storm_run(
    y1: list[torch.Tensor],
    oracle: Oracle,
    loss: Loss,
    samples: Sequence[object],
    *,
    rule: str,
    lr: float,
    a0: float,
    b0: float,
    p: float = 0.5,
    per_coordinate: bool = False,
    ema: bool = False,
    betas: tuple[float, float] = (0.99, 0.99),
    bias_correction: bool = False,
) -> tuple[list[list[torch.Tensor]], list[float]]:
    """Their run over ``samples``: the point after each call's move, and the loss each call logs."""
    sq = (lambda v: v * v) if per_coordinate else (lambda v: (v * v).sum())
    q = (1 - p) / 2
    beta1, beta2 = betas
    y = [t.clone() for t in y1]
    states: list[dict] = [{} for _ in y]
    points, losses = [], []

    def add(old, value, beta):
        return beta * old + (1 - beta) * value if ema else old + value

    for k, xi in enumerate(samples, start=1):
        g_tilde = oracle(y, xi)
        first = not states[0]
        for j, state in enumerate(states):
            if first:  # _initialize_momentum: full-weight accumulators, no bias correction
                g = g_tilde[j]
                state["d"] = g
                if rule == "general":
                    state["sum_a"], state["g_prev"], state["a"] = 0.0, g, 1.0
                    state["sum_b"] = sq(g)
                    state["b"] = (b0 + state["sum_b"]) ** p
                else:
                    state["sum_a"] = sq(g)
                    state["a"] = (1 + state["sum_a"] / a0) ** (-2.0 / 3.0)
                    if rule == "storm_plus":
                        state["sum_b"] = sq(g) / state["a"]
                        state["b"] = (b0 + state["sum_b"]) ** (1.0 / 3.0)
                    else:
                        state["sum_b"] = sq(g)
                        state["b"] = (b0 + state["sum_b"]) ** p / state["a"] ** q
            y[j] = y[j] - lr / state["b"] * state["d"]
        points.append([t.clone() for t in y])
        grads = oracle(y, xi)
        losses.append(loss(y, xi))
        if first:
            continue
        c1 = 1 / (1 - beta1**k) if bias_correction else 1.0
        c2 = 1 / (1 - beta2**k) if bias_correction else 1.0
        for j, state in enumerate(states):
            g, gt = grads[j], g_tilde[j]
            if rule == "general":
                state["sum_a"] = add(state["sum_a"], sq(state["g_prev"] - gt), beta1)
                state["g_prev"] = g
                state["a"] = (1 + state["sum_a"] * c1 / a0) ** (-2.0 / 3.0)
                state["d"] = g + (1 - state["a"]) * (state["d"] - gt)
                state["sum_b"] = add(state["sum_b"], sq(state["d"]), beta2)
                state["b"] = (b0 + state["sum_b"] * c2) ** p / state["a"] ** q
            else:
                state["d"] = g + (1 - state["a"]) * (state["d"] - gt)
                state["sum_a"] = add(state["sum_a"], sq(g), beta1)
                state["a"] = (1 + state["sum_a"] / a0 * c1) ** (-2.0 / 3.0)
                if rule == "storm_plus":
                    state["sum_b"] = add(state["sum_b"], sq(state["d"]) / state["a"], beta2)
                    state["b"] = (b0 + state["sum_b"] * c2) ** (1.0 / 3.0)
                else:
                    state["sum_b"] = add(state["sum_b"], sq(state["d"]), beta2)
                    state["b"] = (b0 + state["sum_b"] * c2) ** p / state["a"] ** q
    return points, losses
