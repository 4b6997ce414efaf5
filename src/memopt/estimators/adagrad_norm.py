"""AdaGrad-Norm: one scalar step size per tensor, or one for a whole parameter group.

Ward, Wu & Bottou, "AdaGrad stepsizes: sharp convergence over nonconvex landscapes", JMLR 2020
(arXiv 1806.01811)::

    b_t^2 = b_{t-1}^2 + ||g_t||^2,      theta_t = theta_{t-1} - lr * N_t / (b_t + eps)

with ``b_0^2 = initial_accumulator_value`` (the paper's ``b_0 > 0`` form, or 0 with ``eps > 0``). The norm
is over the whole tensor, or with ``global_norm=True`` over every parameter of the group, which
``memopt.build_optimizer("adagrad_norm", global_norm=True)`` makes the whole model. With ``beta2 < 1`` the
sum becomes an EMA (an RMSProp-Norm). The accumulator is a float32 (or float64) scalar tensor; the global
one lives in the state of the group's first parameter under ``global_norm_sq``.

All the norms of a step are computed before the updates (:meth:`AdaGradNormSecondMoment.prepare_group`).
On sharded parameters each rank computes the squared norms of its pieces and one all-reduce per step
(one float per sharded tensor) sums them; the scalar accumulators are replicated.
"""

from __future__ import annotations

import torch

from memopt.estimators.base import ParamStep, SecondMomentEstimator
from memopt.estimators.registry import register_estimator
from memopt.estimators.second_moment import accumulate, check_accumulation, denominator
from memopt.state import sharding
from memopt.state.template import StateSlot
from memopt.validation import check_non_negative


@register_estimator("adagrad_norm")
class AdaGradNormSecondMoment(SecondMomentEstimator):
    """One accumulator per tensor (``norm_sq``) or per group (``global_norm_sq``)."""

    hyperparameters = {"initial_accumulator_value": 0.0, "global_norm": False}

    def validate_group(self, group: dict) -> None:
        check_accumulation(group)
        check_non_negative("initial_accumulator_value", group["initial_accumulator_value"])

    @staticmethod
    def _accumulator_slot(group: dict) -> StateSlot:
        """A replicated scalar (float32, or the parameter's dtype if wider) from ``initial_accumulator_value``."""
        return StateSlot("reduced", (), init=group["initial_accumulator_value"], sharded=False)

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        return {} if group["global_norm"] else {"norm_sq": self._accumulator_slot(group)}

    def group_state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        return {"global_norm_sq": self._accumulator_slot(group)} if group["global_norm"] else {}

    def prepare_group(self, steps: list[ParamStep], group: dict) -> None:
        """Accumulate this step's squared norms (of each tensor, or their sum over the group)."""
        if not steps:
            return
        beta2 = group["betas"][1]
        specs = [ps.shard for ps in steps]
        if group["global_norm"]:
            acc = steps[0].group_state["global_norm_sq"]  # created by the optimizer (group_state_template)
            norms = torch.stack([torch.linalg.vector_norm(ps.grad).to(acc.dtype) for ps in steps])
            accumulate(acc, sharding.reduce_partials(norms.square(), specs).sum(), beta2)
            return
        squares = [torch.linalg.vector_norm(ps.grad).to(ps.state["norm_sq"].dtype).square() for ps in steps]
        cut = [i for i, spec in enumerate(specs) if spec.sharded]
        if cut:  # one all-reduce for all the sharded tensors' partial squared norms
            totals = sharding.reduce_partials(torch.stack([squares[i].double() for i in cut]), [specs[i] for i in cut])
            for j, i in enumerate(cut):
                squares[i] = totals[j].to(squares[i].dtype)
        for ps, square in zip(steps, squares):
            accumulate(ps.state["norm_sq"], square, beta2)

    def _accumulator(self, ps: ParamStep, group: dict) -> torch.Tensor:
        return ps.group_state["global_norm_sq"] if group["global_norm"] else ps.state["norm_sq"]

    def precondition(self, numerator: torch.Tensor, ps: ParamStep, group: dict) -> torch.Tensor:
        return numerator / denominator(self._accumulator(ps, group), group, ps.step).to(numerator.dtype)
