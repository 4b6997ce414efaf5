"""PSGD-Kron: a Kronecker-product preconditioner ``Q = Q_1 (x) ... (x) Q_K``, one factor per dimension.

Xi-Lin Li, "Preconditioned Stochastic Gradient Descent" (arXiv 1512.04202) and "Black Box Lie Group
Preconditioners for SGD" (arXiv 2211.04422); the ``Kron`` class of psgd-torch and kron-torch (Walters,
Pooladzandi & Li). A factor is upper triangular (``d_j x d_j``, the group of invertible upper-triangular
matrices) or, to bound memory, diagonal (``d_j`` entries). For a gradient tensor ``G`` seen in its fit shape
and a random ``V`` (:mod:`memopt.curvature.base` says which pair), with ``x_j`` the product along mode j::

    A = G x_1 Q_1 x_2 ... x_K Q_K                  (2-D: A = Q_1 G Q_2^T)
    B = V x_1 Q_1^-T ... x_K Q_K^-T                 (2-D: B = Q_1^-T V Q_2^-1; triangular solves)
    for each factor j, with A_(j), B_(j) the mode-j unfoldings (d_j rows):
        T1 = A_(j) A_(j)^T,   T2 = B_(j) B_(j)^T   (diagonal factor: only their diagonals)
        triangular: Q_j <- Q_j - precond_lr triu(T1 - T2) Q_j / lb(T1 + T2)
        diagonal:   q_j <- q_j - precond_lr (T1 - T2) q_j / max|T1 + T2|

``lb`` is a cheap lower bound of the spectral norm of the symmetric ``T1 + T2`` (:func:`norm_lower_bound`).
With probability 0.01 a fit first rebalances the factors to the geometric mean of their max-norms (the
product is unchanged). The preconditioned gradient is ``P G = G x_1 Q_1^T Q_1 ... x_K Q_K^T Q_K``.

Which dimension gets which factor (memory): dimension j is diagonal if ``d_j == 1``, ``d_j >
max_size_triangular`` (kron-torch), the fit shape has fewer than ``min_ndim_triangular`` dimensions
(kron-torch: 1-D tensors are all-diagonal), or ``d_j > max_skew * r`` where ``r`` is the second-largest size
(psgd-torch's ``preconditioner_max_skew``; 1 for 1-D). ``merge_dims`` views a tensor of more than 2 dimensions
as a matrix (kron-torch's choice: ``[prod(shape[:-1]), shape[-1]]`` unless ``[shape[0], prod(shape[1:])]`` has
a smaller ``columns - rows``). A triangular factor costs ``d_j^2`` floats, a diagonal one ``d_j``.
"""

from __future__ import annotations

import math

import torch

from memopt.curvature.base import Params, PSGDBase, psgd_defaults
from memopt.optim.base import STORAGE_OPTIONS
from memopt.optim.template import StateSlot
from memopt.validation import check_bool, check_positive_int

#: kron-torch's limit on the einsum letters; the factor layout accepts the same number of dimensions
MAX_DIMS = 13


def merged_shape(shape: tuple[int, ...], merge_dims: bool) -> tuple[int, ...]:
    """The shape the preconditioner sees: scalars as ``(1,)``, > 2 dims as a matrix with ``merge_dims``."""
    if len(shape) == 0:
        return (1,)
    if len(shape) <= 2 or not merge_dims:
        return tuple(shape)
    first = (math.prod(shape[:-1]), shape[-1])
    second = (shape[0], math.prod(shape[1:]))
    return first if first[1] - first[0] <= second[1] - second[0] else second


def diagonal_dims(
    shape: tuple[int, ...], max_size_triangular: int, min_ndim_triangular: int, max_skew: float
) -> list[bool]:
    """For each dimension of ``shape``, whether its factor is diagonal (module docstring)."""
    reference = sorted(shape)[-2] if len(shape) > 1 else 1
    return [
        size == 1 or size > max_size_triangular or len(shape) < min_ndim_triangular or size > max_skew * reference
        for size in shape
    ]


def mode_product(x: torch.Tensor, factor: torch.Tensor, mode: int) -> torch.Tensor:
    """``x`` multiplied along ``mode`` by ``factor`` (a matrix: ``factor @ x_(mode)``; a vector: scaling)."""
    if factor.dim() == 1:
        view = [1] * x.dim()
        view[mode] = -1
        return x * factor.view(view)
    return torch.movedim(torch.tensordot(factor, x, dims=([1], [mode])), 0, mode)


def mode_solve_transposed(x: torch.Tensor, factor: torch.Tensor, mode: int) -> torch.Tensor:
    """``x`` multiplied along ``mode`` by ``factor^-T`` (upper-triangular ``factor``: a lower solve)."""
    if factor.dim() == 1:
        view = [1] * x.dim()
        view[mode] = -1
        return x / factor.view(view)
    moved = torch.movedim(x, mode, 0)
    solved = torch.linalg.solve_triangular(factor.mT, moved.reshape(moved.shape[0], -1), upper=False)
    return torch.movedim(solved.reshape(moved.shape), 0, mode)


def unfold_gram(x: torch.Tensor, mode: int, diagonal: bool) -> torch.Tensor:
    """``x_(mode) x_(mode)^T`` (its diagonal when ``diagonal``): the contraction over every other mode."""
    unfolded = torch.movedim(x, mode, 0).reshape(x.shape[mode], -1)
    return unfolded.square().sum(1) if diagonal else unfolded @ unfolded.T


def norm_lower_bound(s: torch.Tensor) -> torch.Tensor:
    """A cheap lower bound of the spectral norm of the symmetric matrix ``s``: ``||s x||`` for ``x`` the
    normalised ``s c``, ``c`` the column of largest norm, computed on ``s / max|s|`` against overflow."""
    scale = s.abs().max()
    if scale == 0:
        return scale
    t = s / scale
    column = t[:, torch.argmax(t.square().sum(0))]
    x = column @ t
    return torch.linalg.vector_norm(t @ (x / torch.linalg.vector_norm(x))) * scale


def diagonal_factor_step(
    q: torch.Tensor, term1: torch.Tensor, term2: torch.Tensor, precond_lr: float, tiny: float
) -> None:
    """``q <- q - precond_lr (term1 - term2) q / max|term1 + term2|`` in place: the PSGD fit of a diagonal
    ``Q = diag(q)`` (psgd README Table II), shared by diagonal Kronecker factors and :class:`PSGDDiag`."""
    normaliser = (term1 + term2).abs().max().clamp(min=tiny)
    q.sub_((term1 - term2) * q * (precond_lr / normaliser))


def balance_factors(factors: list[torch.Tensor]) -> None:
    """Rescale the factors to the geometric mean of their max-norms (their Kronecker product is unchanged)."""
    norms = torch.stack([f.abs().max() for f in factors])
    mean = norms.log().mean().exp()
    for factor, norm in zip(factors, norms):
        factor.mul_(mean / norm)


def kron_fit(factors: list[torch.Tensor], v: torch.Tensor, h: torch.Tensor, precond_lr: float, tiny: float) -> None:
    """Fit the factors to the pair ``(v, h)`` in place (module docstring)."""
    a, b = h, v
    for mode, factor in enumerate(factors):
        a = mode_product(a, factor, mode)
        b = mode_solve_transposed(b, factor, mode)
    for mode, factor in enumerate(factors):
        diagonal = factor.dim() == 1
        term1, term2 = unfold_gram(a, mode, diagonal), unfold_gram(b, mode, diagonal)
        if diagonal:
            diagonal_factor_step(factor, term1, term2, precond_lr, tiny)
        else:
            normaliser = norm_lower_bound(term1 + term2).clamp(min=tiny)
            factor.sub_(torch.triu(term1 - term2) @ factor * (precond_lr / normaliser))


def kron_precondition(factors: list[torch.Tensor], g: torch.Tensor) -> torch.Tensor:
    """``P g``: ``Q_j^T Q_j`` applied along every mode j."""
    for mode, factor in enumerate(factors):
        g = mode_product(mode_product(g, factor, mode), factor.T if factor.dim() == 2 else factor, mode)
    return g


class PSGDKron(PSGDBase):
    """PSGD with a Kronecker-product preconditioner per parameter (module docstring; the loop, pairs and
    schedule: :mod:`memopt.curvature.base`).

    Args:
        params: parameters or parameter groups.
        lr: step size of the parameters (kron-torch advises about a third of Adam's).
        b1: momentum (EMA of the gradient, bias-corrected); 0 switches it off.
        weight_decay: decoupled weight decay ``u + weight_decay x`` on tensors of 2 or more dimensions.
        preconditioner_update_probability: how often the preconditioner is fitted (module docstring of
            :mod:`memopt.curvature.base`); None: 1 for 500 steps, then decaying to 0.03.
        precond_lr: normalised step of the fit (0 < precond_lr; psgd-torch's default 0.1).
        precond_init_scale: ``Q`` starts as ``precond_init_scale * I`` (each factor its K-th root); None: the
            automatic scale of psgd-torch from the first pair (:meth:`~memopt.curvature.base.PSGDBase._init_scale`).
        preconditioner_type: ``"whitening"`` (no closure) or ``"newton"`` (Hessian-vector products;
            ``step(closure)`` with ``loss.backward(create_graph=True)``).
        momentum_into_precond_update: whitening fits to the momentum (True) or the raw gradient.
        clip_update_rms: the preconditioned update's RMS is clipped to this (None: no clipping).
        max_size_triangular, min_ndim_triangular, max_skew, merge_dims: the factor layout (module docstring).
        state_storage, quant_block_size, stochastic_rounding: how the momentum is stored.

    State per parameter: ``step``, ``precond_counter``, ``momentum_buffer`` (b1 > 0) and ``Q0 .. Q{K-1}``
    (float32, float64 for float64 parameters), set to ``scale^(1/K) I`` at the parameter's first step.
    """

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
        max_size_triangular: int = 8192,
        min_ndim_triangular: int = 2,
        max_skew: float = math.inf,
        merge_dims: bool = True,
        state_storage: str = STORAGE_OPTIONS["state_storage"],
        quant_block_size: int = STORAGE_OPTIONS["quant_block_size"],
        stochastic_rounding: bool = False,
    ) -> None:
        super().__init__(params, psgd_defaults(locals()))

    def _check_preconditioner_options(self, group: dict) -> None:
        check_positive_int("max_size_triangular", group["max_size_triangular"])
        check_positive_int("min_ndim_triangular", group["min_ndim_triangular"])
        skew = group["max_skew"]
        if not isinstance(skew, (int, float)) or isinstance(skew, bool) or not skew > 0:
            raise ValueError(f"Invalid max_skew: {skew!r}. max_skew must be a number > 0 (math.inf: no limit).")
        check_bool("merge_dims", group["merge_dims"])
        check_bool("momentum_into_precond_update", group["momentum_into_precond_update"])
        for param in group["params"]:
            if len(self.fit_shape(param, group)) > MAX_DIMS:
                raise ValueError(
                    f"A parameter of shape {tuple(param.shape)} has {param.dim()} dimensions; PSGDKron takes at most "
                    f"{MAX_DIMS}. Set merge_dims=True (tensors become matrices)."
                )

    def fit_shape(self, param: torch.Tensor, group: dict) -> tuple[int, ...]:
        return merged_shape(tuple(param.shape), group["merge_dims"])

    def _diagonal(self, shape: tuple[int, ...], group: dict) -> list[bool]:
        return diagonal_dims(shape, group["max_size_triangular"], group["min_ndim_triangular"], group["max_skew"])

    def preconditioner_template(self, shape: tuple[int, ...], group: dict, dtype: torch.dtype) -> dict[str, StateSlot]:
        return {
            f"Q{j}": StateSlot("fixed", (size,) if diagonal else (size, size), init=0.0, sharded=False, dtype=dtype)
            for j, (size, diagonal) in enumerate(zip(shape, self._diagonal(shape, group)))
        }

    def _factors(self, state: dict) -> list[torch.Tensor]:
        return [state[f"Q{j}"] for j in range(sum(1 for key in state if key.startswith("Q")))]

    def init_preconditioner(
        self, state: dict, shape: tuple[int, ...], group: dict, generator: torch.Generator, scale: float
    ) -> None:
        scale = scale ** (1 / len(shape))
        for factor in self._factors(state):
            if factor.dim() == 1:
                factor.fill_(scale)
            else:
                factor.copy_(torch.eye(factor.shape[0], dtype=factor.dtype, device=factor.device) * scale)

    def fit_preconditioner(
        self, state: dict, v: torch.Tensor, h: torch.Tensor, group: dict, generator: torch.Generator, balance: bool
    ) -> None:
        factors = self._factors(state)
        if balance and len(factors) > 1:
            balance_factors(factors)
        kron_fit(factors, v, h, group["precond_lr"], torch.finfo(h.dtype).tiny)

    def precondition(self, state: dict, g: torch.Tensor, group: dict) -> torch.Tensor:
        return kron_precondition(self._factors(state), g)
