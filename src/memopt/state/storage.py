"""How optimizer state tensors are stored, kept apart from the math that uses them.

An optimizer declares its state as a template (:mod:`.template`) whose slots are created in a format
chosen here (:func:`choose_format`, :func:`reduced_dtype`); the math reads a state through :func:`load` (a
tensor in the compute dtype) and writes it back through :func:`store`. The math never sees
how a state is held; the group option ``state_storage`` chooses it for *elementwise* states (momentum,
Adam's second moment, Subspace-Momentum's projected momentum):

* ``"default"``: the parameter's dtype, as ``torch.optim`` does;
* ``"float32"`` or ``"bfloat16"``: that dtype (math still in float32); with the group option
  ``stochastic_rounding=True`` bfloat16 states (and bfloat16 parameters) are rounded stochastically, so
  that updates smaller than half a bfloat16 ulp survive in expectation;
* ``"8bit"``: block-wise dynamic quantization (:mod:`.quantization`); non-negative states use the unsigned
  map. States with fewer than ``MIN_QUANTIZED_NUMEL`` elements stay float32;
* ``"4bit"``: block-wise 4-bit quantization in blocks of 128 (Li et al., NeurIPS 2023: the signed dynamic
  exponent map, its zero-free unsigned form "DE-0" for non-negative states; two codes per byte;
  :class:`~.formats.Blockwise4bit`). ``quant_block_size`` applies to 8-bit only. Small states stay float32
  as with 8-bit; FSDP2-sharded parameters are refused (``ValueError`` naming the parameter).

Each choice names a *format* object (:mod:`.formats`: :class:`~.formats.Plain`, :class:`~.formats.BFloat16`,
:class:`~.formats.Blockwise8bit`) that owns what the one entry ``optimizer.state[p][key]`` holds (a tensor,
or a :class:`~.formats.QuantizedState` of codes and block maxima) and how a checkpoint lays it out;
:data:`STORAGE_FORMATS` maps the group option to the format of a new state, and :func:`load` /
:func:`store` ask the entry for its format (:func:`.formats.format_of`).

*Reduced* states (Subset-Norm and AdaGrad-Norm accumulators, which sum many squares and are small) are
always held in float32, or the parameter's dtype if wider: a bfloat16 sum stops growing once it is large.

Sharded parameters (:mod:`.sharding`): every state is created row-sharded like the parameter or
replicated (``sharded=``), as a DTensor, and :func:`load` / :func:`store` work on the local piece. Which
states are quantized is decided from the *global* element count, and the 8-bit blocks are those of the
whole state read flat (bitsandbytes' layout, identical on any number of ranks), so a sharded state's codes
equal the unsharded ones bit for bit. A row-sharded 8-bit state keeps its codes cut like the parameter;
its block maxima are laid out in one of two ways, chosen from the global shape and the shard count
(:func:`.formats.blocks_follow_shards`):

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
from collections.abc import Callable, MutableMapping

import torch

from memopt.state import formats, quantization
from memopt.state.formats import StateFormat, blocks_follow_shards, format_of

__all__ = ["STORAGE_CHOICES", "STORAGE_FORMATS", "blocks_follow_shards", "compute_dtype", "create", "load", "store"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(param: torch.Tensor) -> torch.dtype:
    """The dtype the update of ``param`` is computed in: float32 for 16-bit parameters, else its own."""
    return torch.float32 if param.dtype in _LOW_PRECISION else param.dtype


def reduced_dtype(param: torch.Tensor) -> torch.dtype:
    """The storage dtype of accumulators that sum over many entries of ``param``."""
    return compute_dtype(param)


def _eight_bit(default: torch.dtype, numel: int, non_negative: bool, group: dict) -> StateFormat:
    if numel < quantization.MIN_QUANTIZED_NUMEL:
        return formats.Plain(torch.float32)
    block = group.get("quant_block_size", quantization.DEFAULT_BLOCK_SIZE)
    return formats.Blockwise8bit(signed=not non_negative, block_size=block)


def _four_bit(default: torch.dtype, numel: int, non_negative: bool, group: dict) -> StateFormat:
    if numel < quantization.MIN_QUANTIZED_NUMEL:
        return formats.Plain(torch.float32)
    return formats.Blockwise4bit(signed=not non_negative, block_size=quantization.FOUR_BIT_BLOCK_SIZE)


#: ``state_storage`` choice -> the format of a new elementwise state, from the optimizer's default dtype for
#: it, the state's global element count (sharding never changes which states are quantized), whether it
#: is non-negative, and the group
STORAGE_FORMATS: dict[str, Callable[[torch.dtype, int, bool, dict], StateFormat]] = {
    "default": lambda default, numel, non_negative, group: formats.Plain(default),
    "float32": lambda default, numel, non_negative, group: formats.Plain(torch.float32),
    "bfloat16": lambda default, numel, non_negative, group: formats.BFloat16(),
    "8bit": _eight_bit,
    "4bit": _four_bit,
}
STORAGE_CHOICES = tuple(STORAGE_FORMATS)


def choose_format(
    group: dict, shape: tuple[int, ...], *, non_negative: bool = False, default: torch.dtype
) -> StateFormat:
    """The format of a new elementwise state of global ``shape`` under the group's ``state_storage``;
    ``default`` is the dtype the optimizer keeps it in under ``"default"``."""
    choice = group.get("state_storage", "default")
    return STORAGE_FORMATS[choice](default, math.prod(shape), non_negative, group)


def create(
    state: MutableMapping,
    key: str,
    param: torch.Tensor,
    group: dict,
    shape: torch.Size | tuple[int, ...] | None = None,
    *,
    non_negative: bool = False,
    fill: float | torch.Tensor = 0.0,
    sharded: bool | None = None,
    default: torch.dtype | None = None,
) -> None:
    """Create the elementwise state ``key`` of global ``shape`` (default: the parameter's), filled with
    ``fill`` (a number, or a tensor of the local piece's shape), stored as the group's ``state_storage``
    asks. ``sharded``: whether its dim 0 runs over the parameter's rows (default: exactly when it has the
    parameter's shape). ``default``: the dtype under ``state_storage="default"`` (the parameter's)."""
    shape = tuple(param.shape if shape is None else shape)
    if sharded is None:
        sharded = shape == tuple(param.shape)
    fmt = choose_format(group, shape, non_negative=non_negative, default=default or param.dtype)
    state[key] = fmt.create(param, shape, sharded=sharded, fill=fill)


def load(state: MutableMapping, key: str, dtype: torch.dtype, fresh: dict | None = None) -> torch.Tensor:
    """The state ``key`` (its local piece) as a ``dtype`` tensor; the stored tensor itself when no
    conversion is needed.

    With ``fresh`` (a step's cache filled by :func:`store`), a value stored earlier in the same step is
    returned exactly as computed, before any rounding to its storage format.
    """
    if fresh is not None and key in fresh:
        return fresh[key]
    return format_of(state, key).load(state[key], dtype)


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
    format_of(state, key).store(state[key], value, rounding)
