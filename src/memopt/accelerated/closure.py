"""Evaluating a training closure more than once per step: at other points, with the same randomness.

The closure contract (the one ``torch.optim.LBFGS`` uses, and the one memopt's training harness follows for
every optimizer with ``needs_closure = True``): ``closure()`` zeroes the gradients, recomputes the loss
on the *current minibatch* at the *current parameter values* with autograd enabled, calls ``backward`` and
returns the loss. An optimizer may call it several times in one step, after writing other values into
the parameters (the previous iterate for STORM's correction, a line-search point for quasar-convex AGD).

Two calls on the same minibatch must see the same randomness (dropout masks), or the difference of the
two gradients is not a function of the two points alone. :class:`RngSnapshot` records the generators'
states before the first call and replays them for the next calls; the generators end where a single call
would have left them. BatchNorm running statistics are still updated by every call: put such layers in
``eval`` mode inside the closure for the extra calls, or prefer LayerNorm/RMSNorm models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

Closure = Callable[[], Any]


def missing_closure_error(name: str, calls: str) -> ValueError:
    """The error raised when an optimizer that needs a closure is stepped without one."""
    return ValueError(
        f"{name}.step() needs a closure: it {calls}. Pass `closure` that zeroes the gradients, recomputes "
        "the loss on the current minibatch at the current parameters, calls backward() and returns the loss, "
        "e.g. optimizer.step(lambda: (optimizer.zero_grad(), (loss := loss_fn(model(x), y)).backward(), "
        "loss)[-1]). Training loops can check getattr(optimizer, 'needs_closure', False)."
    )


def evaluate(closure: Closure) -> Any:
    """Call ``closure`` with autograd enabled (``step`` itself runs under ``torch.no_grad``)."""
    with torch.enable_grad():
        return closure()


def _cuda_devices() -> list[int]:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


class RngSnapshot:
    """The CPU and CUDA generator states at construction; :meth:`replay` runs code from those states.

    After a ``replay`` block the generators are back where they were when the block started, so that a
    closure evaluated once normally and then replayed leaves them exactly as one evaluation would.
    """

    def __init__(self) -> None:
        self.devices = _cuda_devices()
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, device)
            yield


@contextlib.contextmanager
def parameters_at(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> Iterator[None]:
    """Temporarily write ``values`` into ``params`` (in place, so hooks and views stay valid).

    The current values are kept in one transient copy and written back on exit, bit for bit.
    """
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, v in zip(params, values):
                p.copy_(v)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def gradients(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of the parameters' gradients (zeros for a parameter the closure left without one)."""
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
