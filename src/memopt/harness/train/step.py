"""One optimizer step over microbatches, shared by the training loop, the memory planner and the memory study.

A step is: for each of ``microbatches`` microbatches, a forward pass (under bf16 autocast if asked) and a
backward pass of ``loss / microbatches``, gradients synchronized on the last one only; then the optimizer
step (with a closure for optimizers that re-evaluate the loss), the LR scheduler's step and
``zero_grad(set_to_none=True)``. The training loop puts its checks (clipping, a finite loss) between the
gradients and the update; the planner watches the forward passes and the optimizer's state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def causal_lm_loss(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Next-token loss of a ``transformers`` causal LM on a batch of token ids."""
    return model(input_ids=inputs, labels=inputs).loss


def _always_synchronized(last: bool) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


@dataclass
class TrainStep:
    """A model, its optimizer, a loss and how a step is split into microbatches.

    Attributes:
        model: the model (wrapped for DDP / FSDP2 under torchrun).
        optimizer: its optimizer.
        loss: ``loss(model, inputs) -> scalar`` of one microbatch.
        device: where the model runs (the autocast's device type, the mean loss's device).
        microbatches: forward and backward passes per optimizer step (gradient accumulation).
        bf16_autocast: run the forward passes under ``torch.autocast`` to bfloat16.
        scheduler: the LR scheduler stepped after the optimizer, if any.
        gradient_sync: ``gradient_sync(last)`` is entered around each microbatch's forward and backward;
            distributed runs synchronize gradients only when ``last``.
        watch_forward: entered around each forward pass (the planner's tracker of saved activations).
        after_optimizer_step: called with the optimizer after its step, before ``zero_grad``.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: Callable[[nn.Module, Any], torch.Tensor]
    device: torch.device
    microbatches: int = 1
    bf16_autocast: bool = False
    scheduler: Any = None
    gradient_sync: Callable[[bool], contextlib.AbstractContextManager] = _always_synchronized
    watch_forward: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    after_optimizer_step: Callable[[torch.optim.Optimizer], None] | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the model's device when asked, else nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16_autocast)

    def gradients(self, microbatch: Callable[[int], Any], *, mean_loss: bool = True) -> torch.Tensor | None:
        """Accumulate the gradients of the step's microbatches (``microbatch(i)`` gives the inputs of the
        ``i``-th) and return their mean loss, detached (None with ``mean_loss=False``: no tensor is kept)."""
        count = self.microbatches
        total = torch.zeros((), device=self.device) if mean_loss else None
        for index in range(count):
            inputs = microbatch(index)
            with self.gradient_sync(index == count - 1):
                with self.autocast(), self.watch_forward():
                    loss = self.loss(self.model, inputs)
                (loss / count).backward()
            if total is not None:
                total += loss.detach()
            del loss, inputs  # free the microbatch before the next one is made
        return None if total is None else total / count

    def update(self, closure: Callable[[], torch.Tensor] | None = None) -> None:
        """The optimizer step (``closure`` for optimizers that need one), the scheduler step, ``zero_grad``."""
        if closure is not None:
            self.optimizer.step(closure)
        else:
            self.optimizer.step()
        if self.after_optimizer_step is not None:
            self.after_optimizer_step(self.optimizer)
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self, microbatch: Callable[[int], Any]) -> None:
        """A whole step: :meth:`gradients`, then :meth:`update`."""
        self.gradients(microbatch, mean_loss=False)
        self.update()
