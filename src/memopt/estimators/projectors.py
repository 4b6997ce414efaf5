"""Projectors onto a low-dimensional subspace of a matrix gradient, for Subspace-Momentum.

A projector maps an ``m x n`` gradient ``G`` to a smaller matrix ``P(G)`` and back with ``P*``; ``P* P`` is
an orthogonal projector (idempotent, symmetric), so ``G - P*(P(G))`` is the part of the gradient in the
orthogonal complement. Two families, following the Subset-Norm/Subspace-Momentum paper (arXiv 2411.07120):

* **basis projectors** compress the *shorter* side with ``r`` orthonormal vectors ``Q`` (``r x short``):
  tall (``m >= n``, layout ``"right"``): ``P(G) = G Q^T`` (``m x r``), ``P*(X) = X Q``;
  wide (layout ``"left"``): ``P(G) = Q G`` (``r x n``), ``P*(X) = Q^T X``.
  ``svd``: the top-``r`` singular vectors of ``G`` (exact, ``torch.linalg.svd``).
  ``randomized``: a randomized range finder (Halko, Martinsson & Tropp 2011) with oversampling and power
  iterations, drawn from a generator seeded per parameter and step so that a resumed run draws the same.
* **selection projectors** keep ``r`` of the rows (tall, layout ``"rows"``) or columns (wide, ``"cols"``)
  along the *longer* side: ``P(G) = G[idx]``, ``P*`` scatters back into zeros.
  ``topk``: the rows/columns of largest L2 norm; ``uniform``: a uniformly random subset (no replacement).

State written by :func:`build` into the parameter's state: ``sm_layout`` (str), and ``sm_basis``
(``r x short``, basis projectors) or ``sm_indices`` (int64, selection projectors).

On a parameter sharded on dim 0 (``spec``, :mod:`.sharding`) the projector is replicated: every rank holds
the same basis or indices, and the functions work on the rank's rows of ``G``:

* building: ``svd`` and ``randomized`` gather the full gradient (one all-gather of ``m n`` elements per
  rebuild, every ``update_proj_gap`` steps), the shard group's first rank computes the basis and
  broadcasts it (``r x short``); ``topk`` gathers the ``m`` row norms (layout ``rows``) or all-reduces
  the ``n`` squared column norms (``cols``); ``uniform`` draws the same indices on every rank;
* ``right`` and ``cols`` act within rows: no communication per step;
* ``left`` (``P(G) = Q G``) and ``rows`` (``G[idx]``) combine rows held by several ranks: one
  all-reduce of the ``r x n`` projection per step.
"""

from __future__ import annotations

import torch

from memopt.state import sharding
from memopt.state.sharding import ShardSpec

BASIS_TYPES = ("svd", "randomized")
SELECTION_TYPES = ("topk", "uniform")
PROJ_TYPES = BASIS_TYPES + SELECTION_TYPES
#: the layouts of basis projectors (the others select rows or columns)
BASIS_LAYOUTS = ("right", "left")
#: projectors that draw random numbers (from a generator seeded per parameter and step)
RANDOM_TYPES = ("randomized", "uniform")

#: extra sketch columns and power iterations of the randomized range finder
RANDOMIZED_OVERSAMPLE = 8
RANDOMIZED_POWER_ITERS = 2


def layout_for(shape: tuple[int, ...], proj_type: str) -> str:
    """``"right"``/``"left"`` (basis) or ``"rows"``/``"cols"`` (selection) for a matrix of ``shape``."""
    tall = shape[0] >= shape[1]
    if proj_type in BASIS_TYPES:
        return "right" if tall else "left"
    return "rows" if tall else "cols"


def max_rank(shape: tuple[int, ...], proj_type: str) -> int:
    """The largest meaningful rank: the shorter side for basis projectors, the longer for selection."""
    return min(shape) if proj_type in BASIS_TYPES else max(shape)


def projected_shape(shape: tuple[int, ...], rank: int, layout: str) -> tuple[int, int]:
    """Shape of ``P(G)`` (and of the momentum buffer) for a ``shape`` matrix."""
    m, n = shape
    return {"right": (m, rank), "left": (rank, n), "rows": (rank, n), "cols": (m, rank)}[layout]


def _top_singular_vectors(grad: torch.Tensor, rank: int, layout: str) -> torch.Tensor:
    """``rank x short`` orthonormal rows spanning the top-``rank`` singular subspace of the shorter side:
    right singular vectors of a tall ``grad``, left ones of a wide ``grad`` (one exact SVD of ``grad``)."""
    u, _, vh = torch.linalg.svd(grad, full_matrices=False)
    basis = vh[:rank] if layout == "right" else u[:, :rank].T  # (u comes column-major: .T is a view too)
    # a copy: a view would keep the whole short x short factor alive
    return basis.clone(memory_format=torch.contiguous_format)


def _randomized_right_singular_vectors(mat: torch.Tensor, rank: int, generator: torch.Generator) -> torch.Tensor:
    """Randomized estimate of the top-``rank`` right singular vectors of ``mat`` (``long x short``).

    Written here rather than calling ``torch.svd_lowrank`` because that draws from the global RNG; a
    per-parameter generator keeps the optimizer from disturbing the training's random stream and makes
    resumed runs draw the same sketches.
    """
    short = mat.shape[1]
    width = min(short, rank + RANDOMIZED_OVERSAMPLE)
    sketch = torch.randn(mat.shape[0], width, generator=generator, device=mat.device, dtype=mat.dtype)
    basis, _ = torch.linalg.qr(mat.T @ sketch)  # short x width, spans the row space of mat
    for _ in range(RANDOMIZED_POWER_ITERS):
        basis, _ = torch.linalg.qr(mat.T @ (mat @ basis))
    _, _, vh = torch.linalg.svd(mat @ basis, full_matrices=False)  # small: long x width
    return (vh[:rank] @ basis.T).contiguous()  # rank x short, orthonormal rows


def build(
    grad: torch.Tensor,
    proj_type: str,
    rank: int,
    state: dict,
    generator: torch.Generator | None,
    storage_dtype: torch.dtype,
    spec: ShardSpec | None = None,
) -> None:
    """Compute a projector from the 2-D ``grad`` (this rank's rows of it under ``spec``) and write it
    into ``state`` (keys in the module doc)."""
    spec = spec or sharding.whole(grad.shape)
    layout = layout_for(spec.shape, proj_type)
    state["sm_layout"] = layout
    if proj_type in BASIS_TYPES:
        full = spec.gather(grad)
        short = min(spec.shape)
        if spec.is_source:
            work = full.float() if full.dtype in (torch.float16, torch.bfloat16) else full
            if proj_type == "svd":
                basis = _top_singular_vectors(work, rank, layout)
            else:
                mat = work if layout == "right" else work.T  # long x short
                basis = _randomized_right_singular_vectors(mat, rank, generator)
            basis = basis.to(storage_dtype).contiguous()
        else:
            basis = torch.empty((rank, short), dtype=storage_dtype, device=grad.device)
        state["sm_basis"] = spec.broadcast(basis)  # one basis on every rank, bit for bit
        return
    dim = 1 if layout == "rows" else 0
    long = spec.shape[0] if layout == "rows" else spec.shape[1]
    if proj_type == "topk":
        if layout == "rows":  # whole rows are local: gather the m row norms
            norms = spec.gather(torch.linalg.vector_norm(grad, dim=dim))
        elif spec.sharded:  # columns run across ranks: sum the squared column norms
            norms = spec.all_reduce((grad * grad).sum(dim=0)).sqrt_()
        else:
            norms = torch.linalg.vector_norm(grad, dim=dim)
        indices = torch.topk(norms, rank).indices
    else:
        # a copy of the first rank entries: a view would keep the whole permutation alive
        indices = torch.randperm(long, generator=generator, device=grad.device)[:rank].clone()
    state["sm_indices"] = indices.to(torch.int64)


def _local_rows(state: dict, spec: ShardSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """For the ``rows`` layout: which of the selected rows this rank holds (a mask over the selection) and
    their local positions."""
    indices = state["sm_indices"]
    held = (indices >= spec.start) & (indices < spec.stop)
    return held, indices[held] - spec.start


def matmul(
    a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``a @ b`` in ``a``'s dtype, into ``out`` when given.

    ``dtype=None`` multiplies in the operands' dtype (one ``mm``). ``dtype=torch.bfloat16`` rounds both
    operands to bfloat16 and accumulates the products in float32: on CUDA with ``out_dtype=torch.float32``;
    on CPU torch's bfloat16 ``mm`` accumulates in float32 inside the kernel and rounds its result to bfloat16.
    """
    if dtype is None or dtype == a.dtype:
        return torch.mm(a, b, out=out)
    low_a, low_b = a.to(dtype), b.to(dtype)
    if a.device.type == "cuda":
        product = torch.mm(low_a, low_b, out_dtype=torch.float32)
    else:  # no mixed-precision mm on CPU
        product = torch.mm(low_a, low_b)
    if out is None:
        return product.to(a.dtype)
    return out.copy_(product)


def down(
    x: torch.Tensor,
    state: dict,
    spec: ShardSpec | None = None,
    *,
    out: torch.Tensor | None = None,
    matmul_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``P(x)`` for a gradient-shaped ``x`` (this rank's rows of it under ``spec``); replicated for the
    ``left`` and ``rows`` layouts, this rank's rows for ``right`` and ``cols``. ``out``: a buffer of
    ``P(x)``'s shape and ``x``'s dtype to write it into (not used for the sharded ``left`` and ``rows``
    layouts, which all-reduce a partial result); ``matmul_dtype``: see :func:`matmul`."""
    layout = state["sm_layout"]
    spec = spec or sharding.whole(x.shape)
    if layout == "right":
        return matmul(x, state["sm_basis"].to(x.dtype).T, out=out, dtype=matmul_dtype)
    if layout == "cols":
        return torch.index_select(x, 1, state["sm_indices"], out=out)
    if not spec.sharded:
        if layout == "left":
            return matmul(state["sm_basis"].to(x.dtype), x, out=out, dtype=matmul_dtype)
        return torch.index_select(x, 0, state["sm_indices"], out=out)
    if layout == "left":
        projected = matmul(state["sm_basis"][:, spec.start : spec.stop].to(x.dtype), x, dtype=matmul_dtype)
    else:
        held, rows = _local_rows(state, spec)
        projected = x.new_zeros((state["sm_indices"].numel(), x.shape[1]))
        projected[held] = x.index_select(0, rows)
    return spec.all_reduce(projected)


def up(y: torch.Tensor, state: dict, shape: tuple[int, int], spec: ShardSpec | None = None) -> torch.Tensor:
    """``P*(y)``: back to a gradient-shaped tensor of ``shape`` (this rank's rows under ``spec``)."""
    layout = state["sm_layout"]
    spec = spec or sharding.whole(shape)
    if layout == "right":
        return y @ state["sm_basis"].to(y.dtype)
    if layout == "left":
        return state["sm_basis"][:, spec.start : spec.stop].to(y.dtype).T @ y
    if layout == "cols":
        return torch.zeros(shape, dtype=y.dtype, device=y.device).index_copy_(1, state["sm_indices"], y)
    if not spec.sharded:
        return torch.zeros(shape, dtype=y.dtype, device=y.device).index_copy_(0, state["sm_indices"], y)
    held, rows = _local_rows(state, spec)
    return torch.zeros(shape, dtype=y.dtype, device=y.device).index_copy_(0, rows, y[held])


def add_up(
    base: torch.Tensor,
    y: torch.Tensor,
    state: dict,
    spec: ShardSpec | None = None,
    *,
    matmul_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``base + P*(y)`` as a new tensor of ``base``'s shape (this rank's rows under ``spec``), with no
    temporary of that shape besides the result: the back-projection is written into the result, then
    ``base`` added in place (basis projectors), or ``base``'s selected rows/columns get ``y`` added
    (selection projectors). Equal to ``base + up(y, ...)``: float addition commutes, so the result is bit for
    bit the same (a selection projector leaves a ``-0.0`` of ``base`` outside the selection as it is).

    ``torch.addmm(base, ...)`` would save the in-place pass, but the BLAS may then accumulate the products into
    ``base`` in another order (MKL does for small matrices), which rounds differently."""
    layout = state["sm_layout"]
    spec = spec or sharding.whole(base.shape)
    if layout in BASIS_LAYOUTS:
        if layout == "right":
            product = matmul(y, state["sm_basis"].to(y.dtype), dtype=matmul_dtype)
        else:
            product = matmul(state["sm_basis"][:, spec.start : spec.stop].to(y.dtype).T, y, dtype=matmul_dtype)
        return product.add_(base)
    if layout == "cols":
        return base.index_add(1, state["sm_indices"], y)
    if not spec.sharded:
        return base.index_add(0, state["sm_indices"], y)
    held, rows = _local_rows(state, spec)
    return base.index_add(0, rows, y[held])


def carry(momentum: torch.Tensor, old: dict, new: dict) -> torch.Tensor:
    """Express a momentum buffer held in projector ``old`` in projector ``new`` (the ``transform`` policy).

    Basis projectors rotate it (``M Q_old^T Q_new`` on the right, ``Q_new Q_old^T M`` on the left);
    selection projectors move the rows/columns selected by both to their new positions and zero the rest.
    """
    layout = new["sm_layout"]
    if layout == "right":
        return momentum @ (old["sm_basis"].to(momentum.dtype) @ new["sm_basis"].to(momentum.dtype).T)
    if layout == "left":
        return (new["sm_basis"].to(momentum.dtype) @ old["sm_basis"].to(momentum.dtype).T) @ momentum
    dim = 0 if layout == "rows" else 1
    old_idx, new_idx = old["sm_indices"], new["sm_indices"]
    match = new_idx.unsqueeze(1) == old_idx.unsqueeze(0)  # new position x old position
    has_old = match.any(dim=1)
    source = match.float().argmax(dim=1)
    carried = momentum.index_select(dim, source)
    mask_shape = (-1, 1) if dim == 0 else (1, -1)
    return carried * has_old.view(mask_shape).to(momentum.dtype)
