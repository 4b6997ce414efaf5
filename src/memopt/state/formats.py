"""State formats as objects: how one logical state tensor is held, and the only code that knows it.

A *format* turns a logical state (a tensor the math reads and writes in its compute dtype) into what
``optimizer.state[p]`` holds, and back. Every format has the same five operations:

* :meth:`StateFormat.create` makes the stored entries of a new state (zeros, a constant, or a copy);
* :meth:`StateFormat.load` returns the local piece as a tensor of a requested dtype;
* :meth:`StateFormat.store` writes a computed value back (rounding, quantizing);
* :meth:`StateFormat.nbytes` is what a state of a given shape costs, everything counted;
* :meth:`StateFormat.entries` is the layout: the ``state`` keys the format keeps for a logical state.

The formats:

* :class:`Plain` (a dtype): the tensor itself, as ``torch.optim`` keeps it;
* :class:`BFloat16`: a bfloat16 tensor whose stores round stochastically when the step hands them a
  generator (``stochastic_rounding=True``), so that updates smaller than half an ulp survive in expectation;
* :class:`Blockwise8bit` (signed or unsigned map, block size): uint8 codes under ``key``, float32 block
  maxima under ``key + "_absmax"`` and the map and block size as a string under ``key + "_qmap"`` (e.g.
  ``"signed/256"``), the layout of every memopt checkpoint so far, so that a checkpoint describes itself.
  On FSDP2 shards the maxima are either sharded with the codes (owned) or replicated and combined by MAX
  (see :mod:`memopt.state.storage` for when each applies).

:func:`format_of` recognises the format of a stored state (a loaded checkpoint included) from its entries;
no other module parses key names or format strings.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from dataclasses import dataclass

import torch

from memopt.state import quantization, sharding
from memopt.state.rounding import stochastic_round_to_bfloat16


class StateFormat:
    """How one logical state is stored; see the module docstring."""

    def entries(self, key: str) -> tuple[str, ...]:
        """The ``state`` keys this format keeps for the logical state ``key`` (``key`` first)."""
        return (key,)

    def create(
        self,
        state: MutableMapping,
        key: str,
        param: torch.Tensor,
        shape: tuple[int, ...],
        *,
        sharded: bool,
        fill: float | torch.Tensor = 0.0,
    ) -> None:
        """Create ``state[key]`` (and its companion entries) of global ``shape`` for ``param``, holding
        ``fill`` (a number, or a tensor of the local piece's shape)."""
        raise NotImplementedError

    def load(self, state: MutableMapping, key: str, dtype: torch.dtype) -> torch.Tensor:
        """The local piece of ``key`` as a ``dtype`` tensor (the stored tensor itself if no conversion is needed)."""
        stored = sharding.local(state[key])
        return stored if stored.dtype == dtype else stored.to(dtype)

    def store(
        self, state: MutableMapping, key: str, value: torch.Tensor, rounding: torch.Generator | None = None
    ) -> None:
        """Write ``value`` (the local piece, any float dtype) back into ``key``; a no-op for the tensor
        :meth:`load` returned."""
        stored = sharding.local(state[key])
        if value is not stored:
            stored.copy_(value)

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Bytes a state of global ``shape`` holds in this format (all entries)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Plain(StateFormat):
    """The state as a tensor of ``dtype``."""

    dtype: torch.dtype

    def create(self, state, key, param, shape, *, sharded, fill=0.0):
        if torch.is_tensor(fill):
            value = sharding.zeros(param, shape, self.dtype, sharded=sharded)
            if param.device.type != "meta":
                sharding.local(value).copy_(fill)
            state[key] = value
            return
        state[key] = sharding.zeros(param, shape, self.dtype, sharded=sharded, fill=fill)

    def nbytes(self, shape):
        return math.prod(shape) * torch.empty((), dtype=self.dtype).element_size()


@dataclass(frozen=True)
class BFloat16(Plain):
    """A bfloat16 state; stores round stochastically when given a generator (:mod:`.rounding`)."""

    dtype: torch.dtype = torch.bfloat16

    def store(self, state, key, value, rounding=None):
        stored = sharding.local(state[key])
        if rounding is not None and value.dtype != torch.bfloat16:
            stochastic_round_to_bfloat16(value, rounding, out=stored)
        elif value is not stored:
            stored.copy_(value)


@dataclass(frozen=True)
class Blockwise8bit(StateFormat):
    """Block-wise dynamic 8-bit quantization (:mod:`.quantization`), signed or unsigned map."""

    signed: bool
    block_size: int = quantization.DEFAULT_BLOCK_SIZE

    MAXIMA = "_absmax"
    MAP = "_qmap"

    def entries(self, key):
        return (key, key + self.MAXIMA, key + self.MAP)

    @property
    def tag(self) -> str:
        """The self-description stored under ``key + "_qmap"`` (e.g. ``"signed/256"``)."""
        return f"{'signed' if self.signed else 'unsigned'}/{self.block_size}"

    @classmethod
    def from_tag(cls, tag: str) -> Blockwise8bit:
        kind, block = tag.split("/")
        return cls(kind == "signed", int(block))

    def create(self, state, key, param, shape, *, sharded, fill=0.0):
        numel = math.prod(shape)
        zero_code = int(torch.searchsorted(quantization.dynamic_map(self.signed), 0.0))
        state[key] = sharding.zeros(param, shape, torch.uint8, sharded=sharded, fill=zero_code)
        own = sharded and blocks_follow_shards(shape, self.block_size, sharding.spec_of(param).group_size)
        state[key + self.MAXIMA] = sharding.zeros(
            param, (quantization.num_blocks(numel, self.block_size),), torch.float32, sharded=own
        )
        state[key + self.MAP] = self.tag
        if param.device.type == "meta" or (not torch.is_tensor(fill) and fill == 0):
            return
        piece = sharding.local(state[key]).shape
        value = fill if torch.is_tensor(fill) else torch.full(piece, fill, dtype=torch.float32, device=param.device)
        self.store(state, key, value.to(torch.float32))

    def maxima(self, state: MutableMapping, key: str) -> torch.Tensor:
        """The local block maxima of ``key`` (the fused kernel reads them in place)."""
        return sharding.local(state[key + self.MAXIMA])

    def quantized_alone(self, state: MutableMapping, key: str) -> bool:
        """Whether the local codes are quantized on their own: the whole tensor, or a piece of whole blocks
        that holds its own maxima (:func:`blocks_follow_shards`)."""
        return not sharding.state_spec(state, key).sharded or sharding.state_spec(state, key + self.MAXIMA).sharded

    def _local_maxima(self, state, key, codes) -> tuple[torch.Tensor, int]:
        """The stored maxima of the blocks the local codes overlap, and the codes' flat position."""
        absmax = self.maxima(state, key)
        if self.quantized_alone(state, key):
            return absmax, 0
        start = sharding.state_spec(state, key).flat_start
        return absmax[sharding.blocks_overlapped(start, codes.numel(), self.block_size)], start

    def load(self, state, key, dtype):
        codes = sharding.local(state[key])
        absmax, start = self._local_maxima(state, key, codes)
        values = quantization.dequantize_blockwise(
            codes, absmax, signed=self.signed, block_size=self.block_size, start=start
        )
        return values.to(dtype)

    def store(self, state, key, value, rounding=None):
        codes = sharding.local(state[key])
        full_absmax = self.maxima(state, key)
        block = self.block_size
        if self.quantized_alone(state, key):
            _, absmax = quantization.quantize_blockwise(value, signed=self.signed, block_size=block, out=codes)
            full_absmax.copy_(absmax)
            return
        spec = sharding.state_spec(state, key)
        start = spec.flat_start
        window = sharding.blocks_overlapped(start, value.numel(), block)
        full_absmax.zero_()[window] = quantization.block_maxima(value, block_size=block, start=start)
        spec.all_reduce(full_absmax, op=sharding.MAX)  # whole-block maxima of blocks cut by a shard boundary
        quantization.quantize_blockwise(
            value, signed=self.signed, block_size=block, out=codes, start=start, absmax=full_absmax[window]
        )

    def nbytes(self, shape):
        numel = math.prod(shape)
        return numel + 4 * quantization.num_blocks(numel, self.block_size) + len(self.tag.encode())


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


def format_of(state: MutableMapping, key: str) -> StateFormat:
    """The format of the stored state ``key``, recognised from its entries (a loaded checkpoint's too)."""
    tag = state.get(key + Blockwise8bit.MAP)
    if isinstance(tag, str):
        return Blockwise8bit.from_tag(tag)
    dtype = state[key].dtype
    return BFloat16() if dtype == torch.bfloat16 else Plain(dtype)
