"""Where the optimizer of an offloaded model steps: host copies of the parameters, and moving gradients and
updated values between the parameters' device and the host.

* :func:`host_view` gives the model the inner optimizer is built for: the model itself when every trainable
  parameter already is a float32 (or float64) CPU tensor, else a copy of its module tree (same names, same
  module types, so that registry splits such as "the weights of ``nn.Linear``" still apply) whose trainable
  parameters are float32 host tensors: the **master copy** of 16-bit parameters (Micikevicius et al., "Mixed
  Precision Training", arXiv 1710.03740) and of CUDA parameters. Buffers and frozen parameters are shared,
  not copied.
* :class:`HostTransfer` moves a gradient to the host and an updated master back, synchronously on the CPU;
  :class:`CudaTransfer` does it on a side CUDA stream into pinned host buffers, as torchao's
  ``CPUOffloadOptimizer`` and DeepSpeed ZeRO-Offload do, so that the copies overlap the backward pass.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

_WIDE = (torch.float32, torch.float64)


def needs_master(param: torch.Tensor) -> bool:
    """Whether the optimizer steps a host copy of ``param`` rather than ``param`` itself."""
    return param.device.type != "cpu" or param.dtype not in _WIDE


def host_view(model: nn.Module, *, pin: bool = False) -> nn.Module:
    """``model``, or a copy of its modules whose trainable parameters that :func:`needs_master` are float32
    (or their float64) host copies (pinned with ``pin``); every other tensor is shared."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not any(needs_master(p) for p in trainable):
        return model
    memo: dict[int, torch.Tensor] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in memo:
            continue
        if isinstance(tensor, nn.Parameter) and tensor.requires_grad and needs_master(tensor):
            dtype = tensor.dtype if tensor.dtype in _WIDE else torch.float32
            host = torch.empty(tensor.shape, dtype=dtype, pin_memory=pin and tensor.is_cuda)
            host.copy_(tensor.detach())
            memo[id(tensor)] = nn.Parameter(host)
        else:
            memo[id(tensor)] = tensor
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*data pointer of FakeTensor.*")
        return copy.deepcopy(model, memo)


class HostTransfer:
    """Gradients to the host and masters back, synchronously (parameters on the CPU)."""

    def __init__(self) -> None:
        self._grads: dict[int, torch.Tensor] = {}

    def to_host(self, index: int, grad: torch.Tensor, dtype: torch.dtype) -> None:
        """Start moving ``grad`` (of parameter ``index``) to the host, as ``dtype``."""
        self._grads[index] = grad.to(dtype)

    def ready(self, index: int) -> bool:
        """Whether the gradient of ``index`` has arrived on the host."""
        return True

    def host_grad(self, index: int) -> torch.Tensor:
        """The gradient of ``index`` on the host (waiting for it); it is no longer held here."""
        return self._grads.pop(index)

    def peek(self, index: int) -> torch.Tensor:
        """The gradient of ``index`` on the host (waiting for it), still held here (for clipping)."""
        return self._grads[index]

    def pending(self) -> list[int]:
        """Indices whose gradient was moved and not taken yet."""
        return list(self._grads)

    def to_device(self, param: torch.Tensor, master: torch.Tensor) -> None:
        """Write the stepped ``master`` into ``param`` (rounded to nearest for a 16-bit parameter)."""
        param.detach().copy_(master)

    def finish(self) -> None:
        """Wait for every copy to the device."""

    def clear(self) -> None:
        """Drop the gradients held."""
        self._grads.clear()


class CudaTransfer(HostTransfer):
    """Copies on a side CUDA stream: device-to-host gradients into pinned buffers (one event each), and
    host-to-device masters after their step; :meth:`finish` makes the compute stream wait for them."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self._events: dict[int, torch.cuda.Event] = {}
        self._buffers: dict[int, torch.Tensor] = {}

    def to_host(self, index, grad, dtype):
        buffer = self._buffers.get(index)
        if buffer is None:
            buffer = self._buffers[index] = torch.empty(grad.shape, dtype=dtype, pin_memory=True)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            buffer.copy_(grad, non_blocking=True)
            grad.record_stream(self.stream)
            event = torch.cuda.Event()
            event.record(self.stream)
        self._grads[index], self._events[index] = buffer, event

    def ready(self, index):
        return self._events[index].query()

    def host_grad(self, index):
        self._events.pop(index).synchronize()
        return self._grads.pop(index)

    def peek(self, index):
        self._events[index].synchronize()
        return self._grads[index]

    def to_device(self, param, master):
        with torch.cuda.stream(self.stream):
            param.detach().copy_(master, non_blocking=True)

    def finish(self):
        # the CPU waits too: the next step must not change a master while its copy is still being read
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        self.stream.synchronize()

    def clear(self):
        self._grads.clear()
        self._events.clear()
