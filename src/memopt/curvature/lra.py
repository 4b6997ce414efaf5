"""PSGD with a low-rank-approximation preconditioner ``Q = (I + U V^T) diag(d)`` ("LRA", "UVd").

Pooladzandi & Li, "Curvature-Informed SGD via General Purpose Lie-Group Preconditioners" (arXiv 2402.04553);
psgd-torch's ``update_precond_UVd_math_``. ``U, V`` are ``N x r`` (``N`` entries of the parameter, rank ``r``),
``d`` has ``N`` entries; ``P = Q^T Q`` is a diagonal plus a rank-``2r`` term. With the pair ``(v, h)`` of
:mod:`memopt.curvature.base` (columns), ``M = I + V^T U`` (``r x r``), ``a = Q h`` and ``b = Q^-T v``::

    a = (I + U V^T)(d h);   P h = d (I + V U^T) a
    b = w - V M^-T U^T w  with w = v / d          (Woodbury);   P^-1 v = (b - U M^-1 V^T b) / d
    d <- d - mu d (P h . h - v . P^-1 v),   mu = precond_lr min(1 / (sqrt((Ph)^2 + v^2) sqrt(h^2 + (P^-1 v)^2)))
    then, with probability 1/2 each, either
    U <- U - mu (a a^T V - b b^T V) M,                           mu = precond_lr / (|a| |a^T V V^T| + |b| |b^T V V^T|)
    or
    V <- V - mu ((a + V U^T a) a^T U - (b + V U^T b) b^T U),     mu = precond_lr / (|a| |U U^T a| + |b| |U U^T b|)

(the ``"2nd"`` step normalisers). With probability 0.01 a fit first rebalances ``U /= rho, V *= rho`` with
``rho = sqrt(|U| / |V|)``. ``P g = d (I + V U^T)(I + U V^T)(d g)``. ``U`` and ``V`` start as
``N(0, 1) / sqrt(N (r + 10))`` (so that ``|U V^T| << 1``), ``d`` as ``precond_init_scale``.

Memory: ``(2 r + 1) N`` floats per parameter. psgd-torch fits one LRA over all parameters concatenated; here
each parameter has its own (the per-parameter contract), so the low-rank terms couple entries of one tensor.
"""

from __future__ import annotations

import torch

from memopt.curvature.base import Params, PSGDBase, psgd_defaults
from memopt.optim.base import STORAGE_OPTIONS
from memopt.optim.template import StateSlot
from memopt.validation import check_positive_int


def uvd_fit(
    U: torch.Tensor,
    V: torch.Tensor,
    d: torch.Tensor,
    v: torch.Tensor,
    h: torch.Tensor,
    precond_lr: float,
    tiny: float,
    *,
    balance: bool,
    update_u: bool,
) -> None:
    """One fit of ``Q = (I + U V^T) diag(d)`` to the columns ``(v, h)`` in place (module docstring); ``d`` is a
    column too. ``balance``: rebalance ``U`` and ``V`` first; ``update_u``: step ``U`` (else ``V``)."""
    if balance:
        rho = (torch.linalg.vector_norm(U) / torch.linalg.vector_norm(V)).sqrt()
        U.div_(rho)
        V.mul_(rho)
    m = torch.eye(U.shape[1], dtype=U.dtype, device=U.device) + V.T @ U
    a = d * h
    a = a + U @ (V.T @ a)
    ph = d * (a + V @ (U.T @ a))
    w = v / d
    b = w - V @ torch.linalg.solve(m.T, U.T @ w)
    inv_pv = (b - U @ torch.linalg.solve(m, V.T @ b)) / d
    mu = precond_lr * torch.min(
        torch.rsqrt(ph.square() + v.square() + tiny) * torch.rsqrt(h.square() + inv_pv.square() + tiny)
    )
    d.sub_(mu * d * (ph * h - v * inv_pv))
    norm = torch.linalg.vector_norm
    if update_u:
        a_v, b_v = a.T @ V, b.T @ V
        mu = precond_lr / (norm(a) * norm(a_v @ V.T) + norm(b) * norm(b_v @ V.T) + tiny)
        U.sub_(mu * (a @ (a_v @ m) - b @ (b_v @ m)))
    else:
        a_u, b_u = a.T @ U, b.T @ U
        mu = precond_lr / (norm(a) * norm(U @ a_u.T) + norm(b) * norm(U @ b_u.T) + tiny)
        V.sub_(mu * ((a + V @ a_u.T) @ a_u - (b + V @ b_u.T) @ b_u))


def uvd_precondition(U: torch.Tensor, V: torch.Tensor, d: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``P g = d (I + V U^T)(I + U V^T)(d g)`` for columns ``d`` and ``g``."""
    x = d * g
    x = x + U @ (V.T @ x)
    return d * (x + V @ (U.T @ x))


class PSGDLRA(PSGDBase):
    """PSGD with a low-rank-approximation preconditioner per parameter (module docstring; the loop, pairs and
    schedule: :mod:`memopt.curvature.base`; the arguments are :class:`~memopt.curvature.kron.PSGDKron`'s less
    its factor layout, plus ``rank``). State per parameter: ``step``, ``precond_counter``, ``momentum_buffer``
    (b1 > 0), ``U`` and ``V`` (``numel x rank``) and ``d`` (float32, float64 for float64 parameters)."""

    def __init__(
        self,
        params: Params,
        lr: float = 3e-4,
        b1: float = 0.9,
        weight_decay: float = 0.0,
        preconditioner_update_probability: float | None = None,
        *,
        rank: int = 10,
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

    def _check_preconditioner_options(self, group: dict) -> None:
        check_positive_int("rank", group["rank"])

    def preconditioner_template(self, shape: tuple[int, ...], group: dict, dtype: torch.dtype) -> dict[str, StateSlot]:
        (n,), r = shape, group["rank"]
        return {
            "U": StateSlot("fixed", (n, r), init=0.0, sharded=False, dtype=dtype),
            "V": StateSlot("fixed", (n, r), init=0.0, sharded=False, dtype=dtype),
            "d": StateSlot("fixed", (n,), init=0.0, sharded=False, dtype=dtype),
        }

    def init_preconditioner(
        self, state: dict, shape: tuple[int, ...], group: dict, generator: torch.Generator, scale: float
    ) -> None:
        U, V = state["U"], state["V"]
        for factor in (U, V):
            # drawn in float32 whatever the factor's dtype (copy_ casts), as the fit's random vectors are
            factor.copy_(torch.randn(factor.shape, generator=generator, dtype=torch.float32, device=factor.device))
            factor.mul_((U.shape[0] * (U.shape[1] + 10)) ** -0.5)
        state["d"].fill_(scale)

    def fit_preconditioner(
        self, state: dict, v: torch.Tensor, h: torch.Tensor, group: dict, generator: torch.Generator, balance: bool
    ) -> None:
        update_u = bool(torch.rand((), generator=generator, device=generator.device) < 0.5)
        uvd_fit(
            state["U"], state["V"], state["d"].view(-1, 1), v.view(-1, 1), h.view(-1, 1), group["precond_lr"],
            torch.finfo(h.dtype).tiny, balance=balance, update_u=update_u,
        )  # fmt: skip

    def precondition(self, state: dict, g: torch.Tensor, group: dict) -> torch.Tensor:
        return uvd_precondition(state["U"], state["V"], state["d"].view(-1, 1), g.view(-1, 1)).view(g.shape)
