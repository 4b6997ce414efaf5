"""The one place that knows about sharded parameters: what part of a tensor this rank holds, and how to
combine partial results across the ranks that share it.

FSDP2 (``torch.distributed.fsdp.fully_shard``) turns each parameter into a ``DTensor`` cut on dim 0 into
``torch.chunk``-sized pieces (the last ones may be shorter or empty), one per rank of the shard group; its
gradient is a ``DTensor`` cut the same way. memopt's optimizers compute on the **local** pieces
(``DTensor.to_local()``) and keep their state as ``DTensor``\\ s, so that ``optimizer.state_dict()`` is what
``torch.distributed.checkpoint`` saves and reshards. Every state tensor is one of two kinds:

* **row-sharded**: its dim 0 runs over the parameter's dim 0 (momentum, Adam's second moment, a
  Subset-Norm accumulator per row, Subspace-Momentum's ``m x r`` momentum, 8-bit codes), so it is cut
  exactly like the parameter and every rank updates its rows without communication; also the 8-bit
  block maxima of a state whose shards are whole blocks, cut by :meth:`ShardSpec.chunk`;
* **replicated**: every rank holds it whole and keeps it identical (a Subset-Norm accumulator per column,
  AdaGrad-Norm's scalar, Adafactor's column statistics, extreme-tensoring mode vectors, projector bases,
  the 8-bit block maxima of a state whose shard boundary cuts a block), updated from partial sums that
  :meth:`ShardSpec.all_reduce` combines.

Decisions that shape the math (Subset-Norm's subsets, the projector side, which tensors are quantized) are
taken from the parameter's **global** shape (:attr:`ShardSpec.shape`), never from the local piece, so
sharding changes where numbers are computed but not which numbers. A plain tensor (single process, or
DDP, whose parameters are whole on every rank) has a :class:`ShardSpec` with no process group, and every
helper here is then the identity: the single-process code path is unchanged.

Supported placements: ``Shard(0)`` on one mesh dimension and ``Replicate()`` on the others (FSDP2, and
HSDP's replicated dimension), or ``Replicate()`` everywhere. Other shardings (tensor parallelism's
``Shard(1)``, ``_StridedShard``) are rejected with an error naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DeviceMesh, DTensor, Placement, Replicate, Shard

SUM = dist.ReduceOp.SUM
MAX = dist.ReduceOp.MAX


@dataclass(frozen=True)
class ShardSpec:
    """Where this rank's piece of a tensor sits in the whole tensor.

    Attributes:
        shape: the global (unsharded) shape.
        start, stop: the dim-0 indices ``[start, stop)`` held on this rank (the whole range if unsharded).
        group: the process group over which dim 0 is cut; None when this rank holds the whole tensor.
        mesh, placements: the DTensor layout (None for a plain tensor), used to wrap new state.
    """

    shape: tuple[int, ...]
    start: int
    stop: int
    group: dist.ProcessGroup | None = None
    mesh: DeviceMesh | None = None
    placements: tuple[Placement, ...] | None = None

    @property
    def sharded(self) -> bool:
        """Whether other ranks hold other parts of dim 0 (partial results must be combined)."""
        return self.group is not None

    @property
    def group_size(self) -> int:
        """The number of ranks dim 0 is cut over (1 when this rank holds the whole tensor)."""
        return 1 if self.group is None else dist.get_world_size(self.group)

    @property
    def numel(self) -> int:
        """Elements of the whole tensor."""
        return math.prod(self.shape)

    @property
    def row_numel(self) -> int:
        """Elements per dim-0 index (1 for 0-d and 1-d tensors)."""
        return math.prod(self.shape[1:])

    @property
    def flat_start(self) -> int:
        """Row-major position in the whole tensor of this rank's first element."""
        return self.start * self.row_numel

    def all_reduce(self, tensor: torch.Tensor, op: dist.ReduceOp = SUM) -> torch.Tensor:
        """Combine ``tensor`` (this rank's partial result) across the shard group, in place."""
        if self.group is not None:
            dist.all_reduce(tensor, op=op, group=self.group)
        return tensor

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """The whole tensor from this rank's rows ``local`` (an all-gather over the shard group)."""
        if self.group is None:
            return local
        return self.wrap(local.contiguous(), self.shape, sharded=True).full_tensor()

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite ``tensor`` with the shard group's first rank's, in place."""
        if self.group is not None:
            dist.broadcast(tensor, group=self.group, group_src=0)
        return tensor

    @property
    def is_source(self) -> bool:
        """Whether this rank is the one whose results :meth:`broadcast` distributes."""
        return self.group is None or dist.get_rank(self.group) == 0

    def chunk(self, length: int) -> tuple[int, int]:
        """This rank's indices ``[start, stop)`` of a dim 0 of ``length`` cut over the shard group as
        DTensor's ``Shard(0)`` and FSDP2 cut it (``torch.chunk``'s sizes); for the parameter's own rows,
        ``(self.start, self.stop)``."""
        if self.group is None:
            return 0, length
        piece = -(-length // self.group_size)
        index = dist.get_rank(self.group)
        start = min(index * piece, length)
        return start, min(start + piece, length)

    def local_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The local piece's shape of a tensor of global ``shape`` whose dim 0 is cut like the parameter's
        (the parameter's rows for a state of its row count, :meth:`chunk` of any other length)."""
        shape = tuple(shape)
        if self.mesh is None or not shape or not self.sharded:
            return shape
        start, stop = (self.start, self.stop) if shape[0] == self.shape[0] else self.chunk(shape[0])
        return (stop - start, *shape[1:])

    def wrap(self, local: torch.Tensor, shape: Sequence[int], *, sharded: bool) -> torch.Tensor:
        """``local`` as a DTensor of global ``shape`` on this parameter's mesh (row-sharded like the
        parameter, or replicated); ``local`` itself for a plain tensor."""
        if self.mesh is None:
            return local
        placements = self.placements if sharded else tuple(Replicate() for _ in self.placements)
        shape = torch.Size(shape)
        return DTensor.from_local(
            local, self.mesh, placements, run_check=False, shape=shape, stride=_contiguous_strides(shape)
        )


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, running = [], 1
    for size in reversed(shape):
        strides.append(running)
        running *= max(size, 1)
    return tuple(reversed(strides))


def whole(shape: Sequence[int]) -> ShardSpec:
    """The spec of a tensor this rank holds entirely."""
    shape = tuple(shape)
    return ShardSpec(shape, 0, shape[0] if shape else 1)


def unsupported_message(name: str, placements: Sequence[Placement]) -> str | None:
    """Why memopt cannot optimize a DTensor with ``placements`` (None if it can)."""
    shards = [p for p in placements if not isinstance(p, Replicate)]
    ok = all(type(p) is Shard and p.dim == 0 for p in shards) and len(shards) <= 1
    if ok:
        return None
    return (
        f"{name} is a DTensor with placements {tuple(placements)}; memopt optimizers handle parameters "
        "sharded on dim 0 over one mesh dimension (FSDP2's fully_shard, also in HSDP) or replicated. Shard "
        "this module with torch.distributed.fsdp.fully_shard only (no tensor-parallel Shard(1) or strided "
        "shards), or optimize it with a torch.optim optimizer."
    )


def check_param(param: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``param`` if it is a DTensor sharded in a way memopt does not support."""
    if isinstance(param, DTensor):
        message = unsupported_message(name, param.placements)
        if message:
            raise ValueError(message)


def spec_of(tensor: torch.Tensor) -> ShardSpec:
    """The :class:`ShardSpec` of a parameter or state tensor (a plain tensor is whole)."""
    if not isinstance(tensor, DTensor):
        return whole(tensor.shape)
    placements = tuple(tensor.placements)
    message = unsupported_message(f"a tensor of shape {tuple(tensor.shape)}", placements)
    if message:
        raise ValueError(message)
    mesh = tensor.device_mesh
    shape = tuple(tensor.shape)
    rows = shape[0] if shape else 1
    mesh_dims = [d for d, p in enumerate(placements) if isinstance(p, Shard)]
    if not mesh_dims or mesh.size(mesh_dims[0]) == 1:
        return ShardSpec(shape, 0, rows, None, mesh, placements)
    dim = mesh_dims[0]
    size, coordinate = mesh.size(dim), mesh.get_local_rank(dim)
    chunk = -(-rows // size)  # torch.chunk sizes, as DTensor and FSDP2 cut dim 0
    start = min(coordinate * chunk, rows)
    stop = min(start + chunk, rows)
    local_rows = tensor.to_local().shape[0]
    if local_rows != stop - start:
        raise RuntimeError(
            f"a DTensor of shape {shape} holds {local_rows} rows on this rank, but Shard(0) over {size} ranks "
            f"gives {stop - start}; memopt expects torch.chunk-style shards (as FSDP2's fully_shard makes)."
        )
    return ShardSpec(shape, start, stop, mesh.get_group(dim), mesh, placements)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The local piece of a DTensor (sharing its storage); a plain tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def zeros(
    param: torch.Tensor,
    shape: Sequence[int],
    dtype: torch.dtype,
    *,
    sharded: bool,
    fill: float | int = 0,
) -> torch.Tensor:
    """A new state tensor for ``param`` of global ``shape`` filled with ``fill``: cut on dim 0 like the
    parameter (``sharded=True``: the parameter's rows when dim 0 is its row count, else
    :meth:`ShardSpec.chunk`) or replicated, allocated on the parameter's device. A plain tensor when
    ``param`` is one."""
    spec = spec_of(param)
    piece = spec.local_shape(shape) if sharded else tuple(shape)
    value = torch.full(piece, fill, dtype=dtype, device=local(param).device)
    return spec.wrap(value, shape, sharded=sharded)


def distributed(param: torch.Tensor) -> bool:
    """Whether ``param`` is a DTensor (its state is then held as DTensors)."""
    return isinstance(param, DTensor)


class LocalState(MutableMapping):
    """A parameter's state as estimators see it: each DTensor entry read as its local piece.

    Writing a plain tensor over a DTensor entry wraps it with that entry's layout (projector rebuilds
    replace their basis this way); new entries must come already wrapped (:func:`zeros`), since only
    their creator knows whether they are row-sharded or replicated.
    """

    def __init__(self, state: dict) -> None:
        self.state = state

    def __getitem__(self, key: str) -> Any:
        return local(self.state[key])

    def __setitem__(self, key: str, value: Any) -> None:
        old = self.state.get(key)
        if torch.is_tensor(value) and not isinstance(value, DTensor) and isinstance(old, DTensor):
            value = DTensor.from_local(
                value, old.device_mesh, old.placements, run_check=False, shape=old.shape, stride=old.stride()
            )
        elif torch.is_tensor(value) and not isinstance(value, DTensor) and self._sharded_owner():
            raise RuntimeError(
                f"internal error: new state {key!r} of a DTensor parameter was created as a plain tensor; "
                "create it with memopt.state.sharding.zeros so that it has a layout"
            )
        self.state[key] = value

    def _sharded_owner(self) -> bool:
        return any(isinstance(v, DTensor) for v in self.state.values())

    def __delitem__(self, key: str) -> None:
        del self.state[key]

    def __contains__(self, key: object) -> bool:
        return key in self.state

    def __iter__(self) -> Iterator[str]:
        return iter(self.state)

    def __len__(self) -> int:
        return len(self.state)

    def spec(self, key: str) -> ShardSpec:
        """The :class:`ShardSpec` of the state tensor ``key``."""
        return spec_of(self.state[key])


def local_state(param: torch.Tensor, state: dict) -> MutableMapping:
    """The view of ``param``'s ``state`` its estimators compute on (the dict itself for a plain tensor)."""
    return LocalState(state) if isinstance(param, DTensor) else state


def state_spec(state: MutableMapping, key: str) -> ShardSpec:
    """The :class:`ShardSpec` of the state tensor ``key`` (held in a dict or a :class:`LocalState`)."""
    if isinstance(state, LocalState):
        return state.spec(key)
    return spec_of(state[key])


def reduce_partials(values: torch.Tensor, specs: Sequence[ShardSpec]) -> torch.Tensor:
    """Totals from partial sums: ``values[i]`` is this rank's part of a sum over tensor ``i`` (its whole
    sum when ``specs[i]`` is not sharded). One all-reduce per process group, whatever the count."""
    groups: dict[int, tuple[dist.ProcessGroup, list[int]]] = {}
    for i, spec in enumerate(specs):
        if spec.group is not None:
            groups.setdefault(id(spec.group), (spec.group, []))[1].append(i)
    if not groups:
        return values
    values = values.clone()
    for group, indices in groups.values():
        index = torch.tensor(indices, device=values.device)
        part = values.index_select(0, index)
        dist.all_reduce(part, group=group)
        values.index_copy_(0, index, part)
    return values


def sum_of_squares(x: torch.Tensor, spec: ShardSpec) -> torch.Tensor:
    """``sum(x^2)`` over the whole tensor from this rank's piece ``x`` (a 0-d tensor)."""
    total = torch.linalg.vector_norm(x).square() if x.numel() else x.new_zeros(())
    return spec.all_reduce(total)


def mean(x: torch.Tensor, dim: int, spec: ShardSpec, *, keepdim: bool = False) -> torch.Tensor:
    """``x.mean(dim)`` of the whole tensor, ``x`` being this rank's piece of a tensor whose dim 0 is cut
    like ``spec``'s: a sum over the sharded dim 0 is all-reduced and divided by the global size."""
    if not spec.sharded or dim % x.dim() != 0:
        return x.mean(dim=dim, keepdim=keepdim)
    return spec.all_reduce(x.sum(dim=dim, keepdim=keepdim)) / spec.shape[0]


def check_loaded_layout(template: dict, state: dict, name: str) -> None:
    """Raise ``ValueError`` if a loaded ``state`` is laid out unlike the ``template`` this optimizer would
    create (a plain tensor for a DTensor parameter, or another placement or mesh)."""
    for key, expected in template.items():
        value = state.get(key)
        if not torch.is_tensor(expected) or not torch.is_tensor(value):
            continue
        want = (expected.device_mesh, tuple(expected.placements)) if isinstance(expected, DTensor) else None
        got = (value.device_mesh, tuple(value.placements)) if isinstance(value, DTensor) else None
        if want != got:
            describe = lambda layout: "a plain tensor" if layout is None else f"a DTensor with placements {layout[1]}"
            raise ValueError(
                f"Cannot load optimizer state for {name}: state {key!r} is {describe(got)}, but this optimizer "
                f"keeps it as {describe(want)}. A checkpoint saved with another sharding (or none) must be "
                "loaded with torch.distributed.checkpoint, which reshards it: prepare_state(), then "
                "dcp.load into get_optimizer_state_dict(...) and set_optimizer_state_dict(...)."
            )


def blocks_overlapped(start: int, count: int, block: int) -> slice:
    """The indices of the ``block``-element blocks (cut from element 0 of a flat tensor) that its ``count``
    elements from flat position ``start`` overlap."""
    first = start // block
    return slice(first, first + (-(-(start % block + count) // block) if count else 0))


def flat_blocks(flat: torch.Tensor, block: int, start: int) -> tuple[int, torch.Tensor]:
    """The fixed-size blocks that a piece of a flat tensor overlaps.

    ``flat`` holds elements ``[start, start + n)`` of a flat tensor cut into blocks of ``block`` elements
    from element 0 (8-bit quantization blocks, Subset-Norm's contiguous subsets). Returns the index of the
    first block overlapped and ``flat`` zero-padded to whole blocks, viewed as ``(blocks, block)``; the
    first and last rows hold only this rank's part of a block that a shard boundary cuts.
    """
    n, lead = flat.numel(), start % block
    window = blocks_overlapped(start, n, block)
    blocks = window.stop - window.start
    return window.start, torch.nn.functional.pad(flat, (lead, blocks * block - n - lead)).view(blocks, block)


def unblock(blocks: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """The flat piece of ``n`` elements at ``start`` back from :func:`flat_blocks`' padded view."""
    lead = start % blocks.shape[1] if blocks.dim() == 2 and blocks.shape[1] else 0
    return blocks.reshape(-1)[lead : lead + n]


def stacked_zeros(like: torch.Tensor, count: int) -> torch.Tensor:
    """Zeros of shape ``(count, *like.shape)`` (a history of ``count`` copies of ``like``), laid out like
    ``like``: a DTensor cut on dim 1 when ``like`` is cut on dim 0."""
    piece = local(like)
    value = torch.zeros((count, *piece.shape), dtype=piece.dtype, device=piece.device)
    if not isinstance(like, DTensor):
        return value
    placements = [Shard(p.dim + 1) if isinstance(p, Shard) else p for p in like.placements]
    shape = torch.Size((count, *like.shape))
    return DTensor.from_local(
        value, like.device_mesh, placements, run_check=False, shape=shape, stride=_contiguous_strides(shape)
    )
