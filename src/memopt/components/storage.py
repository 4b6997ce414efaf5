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

Computation always runs in :func:`compute_dtype` of the parameter: float32 for 16-bit parameters, the
parameter's own dtype otherwise.
"""

from __future__ import annotations

import math

import torch

from memopt.components import quantization
from memopt.components.rounding import stochastic_round_to_bfloat16

STORAGE_CHOICES = ("default", "float32", "bfloat16", "8bit")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(param: torch.Tensor) -> torch.dtype:
    """The dtype the update of ``param`` is computed in: float32 for 16-bit parameters, else its own."""
    return torch.float32 if param.dtype in _LOW_PRECISION else param.dtype


def reduced_dtype(param: torch.Tensor) -> torch.dtype:
    """The storage dtype of accumulators that sum over many entries of ``param``."""
    return compute_dtype(param)


def zeros_reduced(param: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """A zero accumulator for sums over entries of ``param``, stored in :func:`reduced_dtype`."""
    return torch.zeros(shape, dtype=reduced_dtype(param), device=param.device)


def create(
    state: dict,
    key: str,
    param: torch.Tensor,
    group: dict,
    shape: torch.Size | tuple[int, ...] | None = None,
    *,
    non_negative: bool = False,
    fill: float = 0.0,
) -> None:
    """Create the elementwise state ``key`` of ``shape`` (default: the parameter's), filled with ``fill``,
    stored as the group's ``state_storage`` asks."""
    shape = tuple(param.shape if shape is None else shape)
    storage = group.get("state_storage", "default")
    numel = math.prod(shape)
    if storage == "8bit" and numel >= quantization.MIN_QUANTIZED_NUMEL:
        block = group.get("quant_block_size", quantization.DEFAULT_BLOCK_SIZE)
        signed = not non_negative
        zero_code = int(torch.searchsorted(quantization.dynamic_map(signed), 0.0))
        state[key] = torch.full(shape, zero_code, dtype=torch.uint8, device=param.device)
        state[key + "_absmax"] = torch.zeros(quantization.num_blocks(numel, block), device=param.device)
        state[key + "_qmap"] = f"{'signed' if signed else 'unsigned'}/{block}"
        if fill != 0 and param.device.type != "meta":
            store(state, key, torch.full(shape, fill, dtype=torch.float32, device=param.device))
        return
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(storage, param.dtype)
    if storage == "8bit":
        dtype = torch.float32
    state[key] = torch.full(shape, fill, dtype=dtype, device=param.device)


def _quant_format(state: dict, key: str) -> tuple[bool, int]:
    kind, block = state[key + "_qmap"].split("/")
    return kind == "signed", int(block)


def load(state: dict, key: str, dtype: torch.dtype, fresh: dict | None = None) -> torch.Tensor:
    """The state ``key`` as a ``dtype`` tensor; the stored tensor itself when no conversion is needed.

    With ``fresh`` (a step's cache filled by :func:`store`), a value stored earlier in the same step is
    returned exactly as computed, before any rounding to its storage format.
    """
    if fresh is not None and key in fresh:
        return fresh[key]
    stored = state[key]
    if stored.dtype == torch.uint8:
        signed, block = _quant_format(state, key)
        return quantization.dequantize_blockwise(stored, state[key + "_absmax"], signed=signed, block_size=block).to(
            dtype
        )
    return stored if stored.dtype == dtype else stored.to(dtype)


def store(
    state: dict, key: str, value: torch.Tensor, fresh: dict | None = None, rounding: torch.Generator | None = None
) -> None:
    """Write ``value`` back into the state ``key`` (a no-op when ``load`` returned the stored tensor), and
    keep it in ``fresh`` for the rest of the step. With a ``rounding`` generator, a bfloat16 state is
    rounded stochastically (:mod:`.rounding`) instead of to nearest."""
    if fresh is not None:
        fresh[key] = value
    stored = state[key]
    if stored.dtype == torch.uint8:
        signed, block = _quant_format(state, key)
        _, absmax = quantization.quantize_blockwise(value, signed=signed, block_size=block, out=stored)
        state[key + "_absmax"].copy_(absmax)
    elif rounding is not None and stored.dtype == torch.bfloat16 and value.dtype != torch.bfloat16:
        stochastic_round_to_bfloat16(value, rounding, out=stored)
    elif value is not stored:
        stored.copy_(value)
