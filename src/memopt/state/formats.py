"""State formats as objects: how one logical state tensor is held, and the only code that knows it.

A *format* turns a logical state (a tensor the math reads and writes in its compute dtype) into the one
entry that ``optimizer.state[p][key]`` holds, and back. Every format has the same operations:

* :meth:`StateFormat.create` makes the entry of a new state (zeros, a constant, or a copy);
* :meth:`StateFormat.load` returns the entry's local piece as a tensor of a requested dtype;
* :meth:`StateFormat.store` writes a computed value back into the entry (rounding, quantizing);
* :meth:`StateFormat.nbytes` is what a state of a given shape costs, everything counted, without
  allocating it (on a sharded parameter: this rank's part);
* :meth:`StateFormat.flatten` / :meth:`StateFormat.entries` are its checkpoint layout: the ``state_dict``
  keys the entry is written as.

The formats:

* :class:`Plain` (a dtype): the entry is the tensor itself, as ``torch.optim`` keeps it;
* :class:`BFloat16`: a bfloat16 tensor whose stores round stochastically when the step hands them a
  generator (``stochastic_rounding=True``), so that updates smaller than half an ulp survive in expectation;
* :class:`Blockwise8bit` (signed or unsigned map, block size): the entry is a :class:`QuantizedState`
  (uint8 codes, float32 block maxima, the format). In a checkpoint it is written as the codes under ``key``,
  the maxima under ``key + "_absmax"`` and the map and block size as a string under ``key + "_qmap"`` (e.g.
  ``"signed/256"``), the layout of every memopt checkpoint so far, so that a checkpoint describes itself.
  On FSDP2 shards the maxima are either sharded with the codes (owned) or replicated and combined by MAX
  (see :mod:`memopt.state.storage` for when each applies).

:func:`format_of` recognises the format of an entry; :func:`flatten_state` writes a parameter's state in
the checkpoint layout and :func:`unflatten_state` rebuilds the entries from it (a checkpoint of any earlier
version included). No other module parses key names or format strings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from memopt.kernels.triton import blockwise  # the Triton (de)quantization of CUDA tensors
from memopt.state import quantization, sharding
from memopt.state.rounding import stochastic_round_to_bfloat16


class StateFormat:
    """How one logical state is stored; see the module docstring."""

    def entries(self, key: str) -> tuple[str, ...]:
        """The ``state_dict`` keys this format writes for the logical state ``key`` (``key`` first)."""
        return (key,)

    def create(
        self,
        param: torch.Tensor,
        shape: tuple[int, ...],
        *,
        sharded: bool,
        fill: float | torch.Tensor = 0.0,
    ) -> Any:
        """The entry of a new state of global ``shape`` for ``param``, holding ``fill`` (a number, or a tensor
        of the local piece's shape)."""
        raise NotImplementedError

    def load(self, entry: Any, dtype: torch.dtype) -> torch.Tensor:
        """The local piece of ``entry`` as a ``dtype`` tensor (the stored tensor itself if no conversion is
        needed)."""
        stored = sharding.local(entry)
        return stored if stored.dtype == dtype else stored.to(dtype)

    def store(self, entry: Any, value: torch.Tensor, rounding: torch.Generator | None = None) -> None:
        """Write ``value`` (the local piece, any float dtype) back into ``entry``; a no-op for the tensor
        :meth:`load` returned."""
        stored = sharding.local(entry)
        if value is not stored:
            stored.copy_(value)

    def nbytes(self, shape: tuple[int, ...], spec: sharding.ShardSpec | None = None, sharded: bool = False) -> int:
        """Bytes a state of global ``shape`` holds in this format (all of it), computed without allocating;
        with ``spec`` (the parameter's) and ``sharded`` (dim 0 cut like the parameter's), this rank's part."""
        raise NotImplementedError

    def flatten(self, key: str, entry: Any) -> dict[str, Any]:
        """``entry`` in the checkpoint layout: :meth:`entries` -> value (the entry's own tensors, no copies)."""
        return {key: entry}


def _piece_numel(shape: tuple[int, ...], spec: sharding.ShardSpec | None, sharded: bool) -> int:
    """Elements this rank holds of a state of global ``shape`` (all of them unless sharded under ``spec``)."""
    if spec is None or not sharded:
        return math.prod(shape)
    return math.prod(spec.local_shape(shape))


@dataclass(frozen=True)
class Plain(StateFormat):
    """The state as a tensor of ``dtype``."""

    dtype: torch.dtype

    def create(self, param, shape, *, sharded, fill=0.0):
        if torch.is_tensor(fill):
            value = sharding.zeros(param, shape, self.dtype, sharded=sharded)
            if param.device.type != "meta":
                sharding.local(value).copy_(fill)
            return value
        return sharding.zeros(param, shape, self.dtype, sharded=sharded, fill=fill)

    def nbytes(self, shape, spec=None, sharded=False):
        return _piece_numel(shape, spec, sharded) * torch.empty((), dtype=self.dtype).element_size()


@dataclass(frozen=True)
class BFloat16(Plain):
    """A bfloat16 state; stores round stochastically when given a generator (:mod:`.rounding`)."""

    dtype: torch.dtype = torch.bfloat16

    def store(self, entry, value, rounding=None):
        stored = sharding.local(entry)
        if rounding is not None and value.dtype != torch.bfloat16:
            stochastic_round_to_bfloat16(value, rounding, out=stored)
        elif value is not stored:
            stored.copy_(value)


@dataclass(eq=False)
class QuantizedState:
    """One block-wise 8-bit state: a single entry of ``optimizer.state[p]``.

    Attributes:
        codes: uint8 codes of the state's global shape (a DTensor cut like the parameter when it is one).
        maxima: float32 block maxima (a DTensor, row-sharded or replicated, on a sharded parameter).
        format: the :class:`Blockwise8bit` format (map and block size) the codes are in.

    ``optimizer.state_dict()`` writes it as three entries (:meth:`Blockwise8bit.flatten`), and
    ``load_state_dict`` rebuilds it (:func:`unflatten_state`). The math reads and writes it through
    ``ParamStep.load`` / ``ParamStep.store``.
    """

    codes: torch.Tensor
    maxima: torch.Tensor
    format: Blockwise8bit | Blockwise4bit
    #: the state's shape when the codes do not have it (4-bit: the codes are packed flat)
    logical_shape: tuple[int, ...] | None = None

    @property
    def shape(self) -> torch.Size:
        """The state's global shape (the codes', unless packed)."""
        return self.codes.shape if self.logical_shape is None else torch.Size(self.logical_shape)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The tensors it holds (codes, maxima), e.g. for memory accounting."""
        return self.codes, self.maxima


class _Blockwise(StateFormat):
    """What both block-wise formats share: an entry of codes, maxima (``key + "_absmax"``) and a tag
    (``key + "_qmap"``) that names the map, the width and the block size, e.g. ``"signed/256"`` (8-bit) or
    ``"unsigned4/128"`` (4-bit). Subclasses are dataclasses with ``signed`` and ``block_size``."""

    #: the width in the tag: "" for 8 bits (the tag of the first checkpoints), "4" for 4 bits
    BITS: str
    MAXIMA = "_absmax"
    MAP = "_qmap"
    signed: bool
    block_size: int

    def entries(self, key):
        return (key, key + self.MAXIMA, key + self.MAP)

    @property
    def tag(self) -> str:
        """The self-description written under ``key + "_qmap"``."""
        return f"{'signed' if self.signed else 'unsigned'}{self.BITS}/{self.block_size}"

    @classmethod
    def from_tag(cls, tag: str):
        kind, block = tag.split("/")
        return cls(kind == "signed" + cls.BITS, int(block))


class Blockwise8bitKernel(Protocol):
    """A faster implementation of :class:`Blockwise8bit`'s load and store of a state quantized on its own
    (:meth:`Blockwise8bit.quantized_alone`), with the torch path's codes and maxima bit for bit. A higher
    layer registers it (:func:`register_8bit_kernel`; memopt's C kernel: :mod:`memopt.kernels.quant8`);
    each call returns None / False where it does not apply (device, dtype, layout), and the torch path runs."""

    def load(self, codes: torch.Tensor, maxima: torch.Tensor, fmt: Blockwise8bit) -> torch.Tensor | None:
        """The float32 values of ``codes`` (local, the state's shape) and their block ``maxima``, or None."""

    def store(self, codes: torch.Tensor, maxima: torch.Tensor, fmt: Blockwise8bit, value: torch.Tensor) -> bool:
        """Quantize ``value`` into ``codes`` and ``maxima`` in place; whether it did."""


_8BIT_KERNEL: Blockwise8bitKernel | None = None


def register_8bit_kernel(kernel: Blockwise8bitKernel | None) -> Blockwise8bitKernel | None:
    """Use ``kernel`` for the load and store of 8-bit states quantized on their own (None: the torch path
    only); returns the kernel it replaces."""
    global _8BIT_KERNEL
    previous, _8BIT_KERNEL = _8BIT_KERNEL, kernel
    return previous


@dataclass(frozen=True)
class Blockwise8bit(_Blockwise):
    """Block-wise dynamic 8-bit quantization (:mod:`.quantization`), signed or unsigned map; its entries are
    :class:`QuantizedState` objects."""

    signed: bool
    block_size: int = quantization.DEFAULT_BLOCK_SIZE

    BITS = ""

    def create(self, param, shape, *, sharded, fill=0.0):
        numel = math.prod(shape)
        zero_code = int(torch.searchsorted(quantization.dynamic_map(self.signed), 0.0))
        codes = sharding.zeros(param, shape, torch.uint8, sharded=sharded, fill=zero_code)
        blocks = (quantization.num_blocks(numel, self.block_size),)
        maxima = sharding.zeros(param, blocks, torch.float32, sharded=self._owned(shape, param, sharded))
        entry = QuantizedState(codes, maxima, self)
        if param.device.type == "meta" or (not torch.is_tensor(fill) and fill == 0):
            return entry
        piece = sharding.local(codes).shape
        value = fill if torch.is_tensor(fill) else torch.full(piece, fill, dtype=torch.float32, device=param.device)
        self.store(entry, value.to(torch.float32))
        return entry

    def _owned(self, shape: tuple[int, ...], param: torch.Tensor, sharded: bool) -> bool:
        """Whether the maxima are cut with the codes (each rank's piece is whole blocks)."""
        return sharded and blocks_follow_shards(shape, self.block_size, sharding.spec_of(param).group_size)

    def flatten(self, key, entry):
        return {key: entry.codes, key + self.MAXIMA: entry.maxima, key + self.MAP: self.tag}

    def maxima(self, entry: QuantizedState) -> torch.Tensor:
        """The local block maxima of ``entry`` (the fused kernel reads them in place)."""
        return sharding.local(entry.maxima)

    def quantized_alone(self, entry: QuantizedState) -> bool:
        """Whether the local codes are quantized on their own: the whole tensor, or a piece of whole blocks
        that holds its own maxima (:func:`blocks_follow_shards`)."""
        return not sharding.spec_of(entry.codes).sharded or sharding.spec_of(entry.maxima).sharded

    def _local_maxima(self, entry: QuantizedState, codes: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The stored maxima of the blocks the local codes overlap, and the codes' flat position."""
        absmax = self.maxima(entry)
        if self.quantized_alone(entry):
            return absmax, 0
        start = sharding.spec_of(entry.codes).flat_start
        return absmax[sharding.blocks_overlapped(start, codes.numel(), self.block_size)], start

    def load(self, entry, dtype):
        codes = sharding.local(entry.codes)
        codec = blockwise.codec(codes)
        if codec is quantization and _8BIT_KERNEL is not None and self.quantized_alone(entry):
            values = _8BIT_KERNEL.load(codes, self.maxima(entry), self)
            if values is not None:
                return values.to(dtype)
        absmax, start = self._local_maxima(entry, codes)
        values = codec.dequantize_blockwise(
            codes, absmax, signed=self.signed, block_size=self.block_size, start=start
        )
        return values.to(dtype)

    def store(self, entry, value, rounding=None):
        codes = sharding.local(entry.codes)
        full_absmax = self.maxima(entry)
        block = self.block_size
        if self.quantized_alone(entry):
            codec = blockwise.codec(codes)  # a Triton kernel where one takes the device, else the C kernel or torch
            kernel = _8BIT_KERNEL if codec is quantization else None
            if kernel is not None and kernel.store(codes, full_absmax, self, value):
                return
            _, absmax = codec.quantize_blockwise(value, signed=self.signed, block_size=block, out=codes)
            full_absmax.copy_(absmax)
            return
        spec = sharding.spec_of(entry.codes)
        start = spec.flat_start
        window = sharding.blocks_overlapped(start, value.numel(), block)
        full_absmax.zero_()[window] = quantization.block_maxima(value, block_size=block, start=start)
        spec.all_reduce(full_absmax, op=sharding.MAX)  # whole-block maxima of blocks cut by a shard boundary
        blockwise.codec(codes).quantize_blockwise(
            value, signed=self.signed, block_size=block, out=codes, start=start, absmax=full_absmax[window]
        )

    def nbytes(self, shape, spec=None, sharded=False):
        numel = math.prod(shape)
        blocks = quantization.num_blocks(numel, self.block_size)
        own = spec is not None and sharded and blocks_follow_shards(shape, self.block_size, spec.group_size)
        return _piece_numel(shape, spec, sharded) + 4 * _piece_numel((blocks,), spec, own) + len(self.tag.encode())


@dataclass(frozen=True)
class Blockwise4bit(_Blockwise):
    """Block-wise 4-bit quantization (:func:`.quantization.quantize_4bit`; Li, Chen & Zhu, NeurIPS 2023):
    the signed dynamic exponent map for states of either sign, the zero-free unsigned DE map ("DE-0") for
    non-negative ones; two codes per byte, packed flat, and one float32 maximum per ``block_size`` elements. Its entries
    are :class:`QuantizedState` objects with ``logical_shape`` set. In a checkpoint: the packed codes under
    ``key``, the maxima under ``key + "_absmax"`` and the tag (e.g. ``"signed4/128"``) under ``key + "_qmap"``.

    FSDP2-sharded parameters are refused: the packed bytes and the blocks run over the flat state, which a
    row cut of the parameter does not follow (a boundary can fall inside a byte or a block)."""

    signed: bool
    block_size: int = quantization.FOUR_BIT_BLOCK_SIZE

    BITS = "4"

    def create(self, param, shape, *, sharded, fill=0.0):
        if sharded and sharding.spec_of(param).sharded:
            raise ValueError(sharded_4bit_message(f"a parameter of shape {tuple(param.shape)}"))
        numel = math.prod(shape)
        packed = sharding.zeros(param, (-(-numel // 2),), torch.uint8, sharded=False)
        maxima = sharding.zeros(param, (quantization.num_blocks(numel, self.block_size),), torch.float32, sharded=False)
        entry = QuantizedState(packed, maxima, self, tuple(shape))
        if param.device.type == "meta":
            return entry
        if not torch.is_tensor(fill):
            fill = torch.full(tuple(shape), fill, dtype=torch.float32, device=param.device)
        value = fill
        self.store(entry, value.to(torch.float32))  # zeros too: the unsigned map has no zero code
        return entry

    def flatten(self, key, entry):
        return {key: entry.codes, key + self.MAXIMA: entry.maxima, key + self.MAP: self.tag}

    def load(self, entry, dtype):
        codes = sharding.local(entry.codes)
        values = quantization.dequantize_4bit(
            codes,
            sharding.local(entry.maxima),
            signed=self.signed,
            numel=math.prod(entry.shape),
            block_size=self.block_size,
        )
        return values.view(entry.shape).to(dtype)

    def store(self, entry, value, rounding=None):
        _, absmax = quantization.quantize_4bit(
            value, signed=self.signed, block_size=self.block_size, out=sharding.local(entry.codes)
        )
        sharding.local(entry.maxima).copy_(absmax)

    def nbytes(self, shape, spec=None, sharded=False):
        numel = math.prod(shape)
        return -(-numel // 2) + 4 * quantization.num_blocks(numel, self.block_size) + len(self.tag.encode())


def sharded_4bit_message(name: str) -> str:
    """Why ``state_storage="4bit"`` refuses the FSDP2-sharded parameter ``name``."""
    return (
        f'{name} is sharded (FSDP2); state_storage="4bit" does not support sharded parameters: its two '
        "codes per byte and its 128-element blocks run over the whole state read flat, and a shard boundary "
        'between rows can cut a packed byte or a block. Use state_storage="8bit" for sharded parameters, '
        "or do not shard this module."
    )


def _from_tag(tag: str) -> StateFormat:
    """The quantized format a checkpoint tag names (``"signed/256"``: 8-bit; ``"signed4/128"``: 4-bit)."""
    return Blockwise4bit.from_tag(tag) if tag.split("/")[0].endswith("4") else Blockwise8bit.from_tag(tag)


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


def format_of(state: Mapping, key: str) -> StateFormat:
    """The format of the entry ``state[key]``."""
    entry = state[key]
    if isinstance(entry, QuantizedState):
        return entry.format
    dtype = entry.dtype
    return BFloat16() if dtype == torch.bfloat16 else Plain(dtype)


def flatten_state(state: Mapping) -> dict[str, Any]:
    """A parameter's state in the checkpoint layout: every entry as its format's flat keys (an 8-bit state
    as codes, ``_absmax`` and ``_qmap``), everything else as it is; the tensors themselves, not copies."""
    flat: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, QuantizedState):
            flat.update(value.format.flatten(key, value))
        else:
            flat[key] = value
    return flat


def unflatten_state(flat: Mapping, like: Mapping | None = None) -> dict[str, Any]:
    """The entries of a state in the checkpoint layout (:func:`flatten_state`'s inverse): the codes of an
    8-bit or 4-bit state, recognised by the tag under ``key + "_qmap"``, become one :class:`QuantizedState`
    with its maxima. Key order is kept. A 4-bit state's codes are packed flat: its shape is taken from the
    entry of the same key in ``like`` (the state this optimizer would create), else it stays flat."""
    state: MutableMapping[str, Any] = {}
    companions: set[str] = set()
    for key, value in flat.items():
        if key in companions:
            continue
        tag = flat.get(key + Blockwise8bit.MAP)
        maxima = flat.get(key + Blockwise8bit.MAXIMA)
        if isinstance(tag, str) and torch.is_tensor(value) and torch.is_tensor(maxima):
            fmt = _from_tag(tag)
            shape = None
            if isinstance(fmt, Blockwise4bit):
                template = (like or {}).get(key)
                shape = tuple(template.shape) if template is not None else (2 * value.numel(),)
            state[key] = QuantizedState(value, maxima, fmt, shape)
            companions.update(fmt.entries(key)[1:])
        else:
            state[key] = value
    for key in companions:
        state.pop(key, None)  # a companion listed before its codes
    return dict(state)
