"""How optimizer state tensors are stored, kept apart from the math that uses them.

Every estimator reads its state through :func:`load` (which returns a tensor in the compute dtype) and
writes it back through :func:`store`. The math therefore never sees how a state is held. Today a state is
held as a plain tensor whose dtype follows two rules (below); lower-precision and quantized storage plug in
here without any estimator changing.

Dtype rules (``state_dtype`` group option ``None``):

* *elementwise* states (same shape as the parameter: momentum, Adam's second moment) use the parameter's
  dtype, as ``torch.optim`` does;
* *reduced* states (Subset-Norm and AdaGrad-Norm accumulators, which sum many squares) are held in float32
  when the parameter is of lower precision, because a bfloat16 sum stops growing once it is large.

Computation always runs in :func:`compute_dtype` of the parameter: float32 for 16-bit parameters, the
parameter's own dtype otherwise.
"""

from __future__ import annotations

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(param: torch.Tensor) -> torch.dtype:
    """The dtype the update of ``param`` is computed in: float32 for 16-bit parameters, else its own."""
    return torch.float32 if param.dtype in _LOW_PRECISION else param.dtype


def reduced_dtype(param: torch.Tensor) -> torch.dtype:
    """The storage dtype of accumulators that sum over many entries of ``param``."""
    return compute_dtype(param)


def zeros_elementwise(param: torch.Tensor, shape: torch.Size | tuple[int, ...] | None = None) -> torch.Tensor:
    """A zero state tensor stored like the parameter (its dtype and device), of ``shape`` (default: its)."""
    shape = param.shape if shape is None else shape
    return torch.zeros(shape, dtype=param.dtype, device=param.device)


def zeros_reduced(param: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """A zero accumulator for sums over entries of ``param``, stored in :func:`reduced_dtype`."""
    return torch.zeros(shape, dtype=reduced_dtype(param), device=param.device)


def load(state: dict, key: str, dtype: torch.dtype) -> torch.Tensor:
    """The state ``key`` as a ``dtype`` tensor; the stored tensor itself when no conversion is needed."""
    stored = state[key]
    return stored if stored.dtype == dtype else stored.to(dtype)


def store(state: dict, key: str, value: torch.Tensor) -> None:
    """Write ``value`` back into the state ``key`` (a no-op when ``load`` returned the stored tensor)."""
    stored = state[key]
    if value is not stored:
        stored.copy_(value)
