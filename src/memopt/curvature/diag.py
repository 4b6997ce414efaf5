"""PSGD with a diagonal preconditioner ``Q = diag(d)``: the Lie group of invertible diagonal matrices.

Xi-Lin Li, "Preconditioned Stochastic Gradient Descent" (arXiv 1512.04202); psgd README Table II. With the
pair ``(v, h)`` of :mod:`memopt.curvature.base`, one fit is, elementwise::

    d <- d - precond_lr ((d h)^2 - (v/d)^2) d / max((d h)^2 + (v/d)^2)

(the ``"2nd"`` step normaliser; it equals psgd-torch's ``LRA`` update with rank 0), and the preconditioned
gradient is ``P g = d^2 g``. At the optimum ``d^4 = E[v^2] / E[h^2]``: for Newton-type pairs on a quadratic
``d^2 = 1/|H_ii|`` for a diagonal Hessian; for whitening, ``d^2 = 1/sqrt(E[g^2])``, Adam's denominator
without epsilon. One float per parameter entry (plus the momentum).
"""

from __future__ import annotations

import torch

from memopt.curvature.base import Params, PSGDBase, psgd_defaults
from memopt.curvature.kron import diagonal_factor_step
from memopt.optim.base import STORAGE_OPTIONS
from memopt.optim.template import StateSlot


def diag_fit(d: torch.Tensor, v: torch.Tensor, h: torch.Tensor, precond_lr: float, tiny: float) -> None:
    """One fit of ``d`` to ``(v, h)`` in place (module docstring)."""
    diagonal_factor_step(d, (d * h).square(), (v / d).square(), precond_lr, tiny)


class PSGDDiag(PSGDBase):
    """PSGD with a diagonal preconditioner per parameter (module docstring; the loop, pairs and schedule:
    :mod:`memopt.curvature.base`; the arguments are :class:`~memopt.curvature.kron.PSGDKron`'s less its factor
    layout). State per parameter: ``step``, ``precond_counter``, ``momentum_buffer`` (b1 > 0) and ``d``
    (float32, float64 for float64 parameters), ``precond_init_scale`` everywhere at the first step."""

    def __init__(
        self,
        params: Params,
        lr: float = 3e-4,
        b1: float = 0.9,
        weight_decay: float = 0.0,
        preconditioner_update_probability: float | None = None,
        *,
        precond_lr: float = 0.1,
        precond_init_scale: float | None = 1.0,
        preconditioner_type: str = "whitening",
        momentum_into_precond_update: bool = True,
        clip_update_rms: float | None = 1.1,
        state_storage: str = STORAGE_OPTIONS["state_storage"],
        quant_block_size: int = STORAGE_OPTIONS["quant_block_size"],
        stochastic_rounding: bool = False,
    ) -> None:
        super().__init__(params, psgd_defaults(locals()))

    def preconditioner_template(self, shape: tuple[int, ...], group: dict, dtype: torch.dtype) -> dict[str, StateSlot]:
        return {"d": StateSlot("fixed", shape, init=0.0, sharded=False, dtype=dtype)}

    def init_preconditioner(
        self, state: dict, shape: tuple[int, ...], group: dict, generator: torch.Generator, scale: float
    ) -> None:
        state["d"].fill_(scale)

    def fit_preconditioner(
        self, state: dict, v: torch.Tensor, h: torch.Tensor, group: dict, generator: torch.Generator, balance: bool
    ) -> None:
        diag_fit(state["d"], v, h, group["precond_lr"], torch.finfo(h.dtype).tiny)

    def precondition(self, state: dict, g: torch.Tensor, group: dict) -> torch.Tensor:
        return state["d"].square() * g
