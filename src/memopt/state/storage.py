"""How optimizer state tensors are stored, kept apart from the math that uses them.

Every estimator creates its state with :func:`create` (or :func:`zeros_reduced`), reads it through
:func:`load` (a tensor in the compute dtype) and writes it back through :func:`store`. The math never sees
how a state is held; the group option ``state_storage`` chooses it for *elementwise* states (momentum,
Adam's second moment, Subspace-Momentum's projected momentum):

* ``"default"``: the parameter's dtype, as ``torch.optim`` does;
* ``"float32"`` or ``"bfloat16"``: that dtype (math still in float32); with the group option
  ``stochastic_rounding=True`` bfloat16 states (and bfloat16 parameters) are rounded stochastically, so
  that updates smaller than half a bfloat16 ulp survive in expectation;
* ``"8bit"``: block-wise dynamic quantization (:mod:`.quantization`): ``state[key]`` holds uint8 codes,
  ``state[key + "_absmax"]`` the float32 block maxima and ``state[key + "_qmap"]`` the map and block size
  (e.g. ``"signed/256"``), so a checkpoint describes itself. Non-negative states use the unsigned map.
  States with fewer than ``MIN_QUANTIZED_NUMEL`` elements stay float32.

*Reduced* states (Subset-Norm and AdaGrad-Norm accumulators, which sum many squares and are small) are
always held in float32, or the parameter's dtype if wider: a bfloat16 sum stops growing once it is large.

Sharded parameters (:mod:`.sharding`): every state is created row-sharded like the parameter or
replicated (``sharded=``), as a DTensor, and :func:`load` / :func:`store` work on the local piece. Which
states are quantized is decided from the *global* element count, and the 8-bit blocks are those of the
whole state read flat (bitsandbytes' layout, identical on any number of ranks), so a sharded state's codes
equal the unsharded ones bit for bit. A row-sharded 8-bit state keeps its codes cut like the parameter;
its block maxima are laid out in one of two ways, chosen from the global shape and the shard count
(:func:`blocks_follow_shards`):

* every rank's piece is made of whole blocks (the usual case: LLaMA's matrices over 2, 4 or 8 ranks):
  the maxima are cut on dim 0 too, each rank quantizes its piece alone and keeps only its own maxima, and
  no block straddles a shard: no communication;
* otherwise (a shard boundary inside a block) the maxima of the whole tensor are replicated, and a cut
  block takes the ``MAX`` of both pieces: each store costs one ``all_reduce(MAX)`` of
  ``ceil(numel / block)`` float32 maxima.

Computation always runs in :func:`compute_dtype` of the parameter: float32 for 16-bit parameters, the
parameter's own dtype otherwise.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping

import torch

from memopt.state import quantization, sharding
from memopt.state.rounding import stochastic_round_to_bfloat16

STORAGE_CHOICES = ("default", "float32", "bfloat16", "8bit")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(param: torch.Tensor) -> torch.dtype:
    """The dtype the update of ``param`` is computed in: float32 for 16-bit parameters, else its own."""
    return torch.float32 if param.dtype in _LOW_PRECISION else param.dtype


def reduced_dtype(param: torch.Tensor) -> torch.dtype:
    """The storage dtype of accumulators that sum over many entries of ``param``."""
    return compute_dtype(param)


def zeros_reduced(param: torch.Tensor, shape: torch.Size | tuple[int, ...], *, sharded: bool = False) -> torch.Tensor:
    """A zero accumulator for sums over entries of ``param``, stored in :func:`reduced_dtype`;
    ``sharded=True`` when its dim 0 runs over the parameter's rows (else it is replicated)."""
    return sharding.zeros(param, shape, reduced_dtype(param), sharded=sharded)


def create(
    state: MutableMapping,
    key: str,
    param: torch.Tensor,
    group: dict,
    shape: torch.Size | tuple[int, ...] | None = None,
    *,
    non_negative: bool = False,
    fill: float = 0.0,
    sharded: bool | None = None,
) -> None:
    """Create the elementwise state ``key`` of global ``shape`` (default: the parameter's), filled with
    ``fill``, stored as the group's ``state_storage`` asks. ``sharded``: whether its dim 0 runs over the
    parameter's rows (default: exactly when it has the parameter's shape)."""
    shape = tuple(param.shape if shape is None else shape)
    if sharded is None:
        sharded = shape == tuple(param.shape)
    storage = group.get("state_storage", "default")
    numel = math.prod(shape)  # the global count: sharding never changes which states are quantized
    if storage == "8bit" and numel >= quantization.MIN_QUANTIZED_NUMEL:
        block = group.get("quant_block_size", quantization.DEFAULT_BLOCK_SIZE)
        signed = not non_negative
        zero_code = int(torch.searchsorted(quantization.dynamic_map(signed), 0.0))
        state[key] = sharding.zeros(param, shape, torch.uint8, sharded=sharded, fill=zero_code)
        own_blocks = sharded and blocks_follow_shards(shape, block, sharding.spec_of(param).group_size)
        state[key + "_absmax"] = sharding.zeros(
            param, (quantization.num_blocks(numel, block),), torch.float32, sharded=own_blocks
        )
        state[key + "_qmap"] = f"{'signed' if signed else 'unsigned'}/{block}"
        if fill != 0 and param.device.type != "meta":
            piece = sharding.local(state[key]).shape
            store(state, key, torch.full(piece, fill, dtype=torch.float32, device=param.device))
        return
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(storage, param.dtype)
    if storage == "8bit":
        dtype = torch.float32
    state[key] = sharding.zeros(param, shape, dtype, sharded=sharded, fill=fill)


def blocks_follow_shards(shape: tuple[int, ...], block: int, ranks: int) -> bool:
    """Whether, with dim 0 of ``shape`` cut over ``ranks`` ranks as FSDP2 cuts it (``torch.chunk``'s
    sizes), every rank's piece is made of whole ``block``-element blocks, and exactly the blocks that the
    same cut of the ``numel / block`` block maxima gives that rank. Then each rank quantizes its piece on
    its own, with its own slice of the maxima."""
    numel = math.prod(shape)
    if ranks <= 1 or not shape or numel == 0 or numel % block:
        return False
    rows, blocks = shape[0], numel // block
    row_numel = numel // rows
    rows_per, blocks_per = -(-rows // ranks), -(-blocks // ranks)
    return all(min(r * rows_per, rows) * row_numel == min(r * blocks_per, blocks) * block for r in range(ranks))


def _quant_format(state: MutableMapping, key: str) -> tuple[bool, int]:
    kind, block = state[key + "_qmap"].split("/")
    return kind == "signed", int(block)


def load(state: MutableMapping, key: str, dtype: torch.dtype, fresh: dict | None = None) -> torch.Tensor:
    """The state ``key`` (its local piece) as a ``dtype`` tensor; the stored tensor itself when no
    conversion is needed.

    With ``fresh`` (a step's cache filled by :func:`store`), a value stored earlier in the same step is
    returned exactly as computed, before any rounding to its storage format.
    """
    if fresh is not None and key in fresh:
        return fresh[key]
    stored = sharding.local(state[key])
    if stored.dtype == torch.uint8:
        signed, block = _quant_format(state, key)
        absmax, start = _local_maxima(state, key, stored, block)
        values = quantization.dequantize_blockwise(stored, absmax, signed=signed, block_size=block, start=start)
        return values.to(dtype)
    return stored if stored.dtype == dtype else stored.to(dtype)


def _quantized_alone(state: MutableMapping, key: str) -> bool:
    """Whether the local codes of the 8-bit state ``key`` are quantized on their own: the whole tensor, or
    a piece of whole blocks that holds its own maxima (:func:`blocks_follow_shards`)."""
    return not sharding.state_spec(state, key).sharded or sharding.state_spec(state, key + "_absmax").sharded


def _local_maxima(state: MutableMapping, key: str, codes: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    """The stored maxima of the blocks the local codes overlap, and the codes' flat position."""
    absmax = sharding.local(state[key + "_absmax"])
    if _quantized_alone(state, key):
        return absmax, 0
    start = sharding.state_spec(state, key).flat_start
    return absmax[sharding.blocks_overlapped(start, codes.numel(), block)], start


def store(
    state: MutableMapping,
    key: str,
    value: torch.Tensor,
    fresh: dict | None = None,
    rounding: torch.Generator | None = None,
) -> None:
    """Write ``value`` back into the state ``key`` (a no-op when ``load`` returned the stored tensor), and
    keep it in ``fresh`` for the rest of the step. With a ``rounding`` generator, a bfloat16 state is
    rounded stochastically (:mod:`.rounding`) instead of to nearest."""
    if fresh is not None:
        fresh[key] = value
    stored = sharding.local(state[key])
    if stored.dtype == torch.uint8:
        signed, block = _quant_format(state, key)
        full_absmax = sharding.local(state[key + "_absmax"])
        if _quantized_alone(state, key):
            _, absmax = quantization.quantize_blockwise(value, signed=signed, block_size=block, out=stored)
            full_absmax.copy_(absmax)
            return
        spec = sharding.state_spec(state, key)
        start = spec.flat_start
        window = sharding.blocks_overlapped(start, value.numel(), block)
        full_absmax.zero_()[window] = quantization.block_maxima(value, block_size=block, start=start)
        spec.all_reduce(full_absmax, op=sharding.MAX)  # whole-block maxima of blocks cut by a shard boundary
        quantization.quantize_blockwise(
            value, signed=signed, block_size=block, out=stored, start=start, absmax=full_absmax[window]
        )
    elif rounding is not None and stored.dtype == torch.bfloat16 and value.dtype != torch.bfloat16:
        stochastic_round_to_bfloat16(value, rounding, out=stored)
    elif value is not stored:
        stored.copy_(value)
