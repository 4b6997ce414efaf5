"""Grokfast: amplify the slow (low-frequency) part of each parameter's gradient, for any optimizer.

Lee, Kang, Kim & Lee, "Grokfast: Accelerated Grokking by Amplifying Slow Gradients", arXiv 2405.20233
(``ironjr/grokfast``). The filter rewrites ``.grad`` between ``backward()`` and ``optimizer.step()``::

    EMA:  h <- alpha h + (1 - alpha) g      (h starts as the first gradient)      g <- g + lamb * h
    MA:   push g into the last `window` gradients (the current one included)       g <- g + lamb * mean
          (or the sum, reduction="sum"); with warmup=True nothing changes until the window is full

so the optimizer (torch's or memopt's, with its own weight decay and momentum) then steps on the filtered
gradient. The frequency response of the EMA filter is ``1 + lamb (1 - alpha)/(1 - alpha e^{-i w})``: ``1 +
lamb`` at DC, about 1 at high frequencies. The README's heuristic: ``alpha^N ~ 0.1`` for an N-fold speed-up
(``alpha = 0.98`` for N = 100).

Usage::

    grokfast = memopt.Grokfast(model.parameters(), alpha=0.98, lamb=2.0)       # or filter="ma", window=100
    loss.backward(); grokfast.step(); optimizer.step()                           # explicitly, or
    grokfast.attach(optimizer)    # runs grokfast.step() as a pre-hook of every optimizer.step()

Apply it once per optimizer step (after gradient accumulation and AMP unscaling); clip after it if you
clip. Parameters whose ``.grad`` is None are skipped (and get their state at their first gradient).
``state_dict()`` / ``load_state_dict()`` save and restore the filter's state exactly.
Memory: one tensor per parameter (EMA), ``window`` tensors per parameter (MA).

Under data parallelism the filter must see the gradient of the whole (global) minibatch, once per step:
call it after ``backward()`` has synchronized the gradients (DDP's all-reduce, FSDP2's reduce-scatter),
exactly where it goes in a single process. With FSDP2 the gradients are DTensors cut on dim 0; the filter is
elementwise, so each rank filters its piece with its piece of the state (kept as DTensors laid out like the
gradient, the MA history cut on its dim 1), with no communication.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from memopt.state import sharding
from memopt.validation import check_choice, check_fraction, check_non_negative, check_positive_int


class Grokfast:
    """The Grokfast gradient filter (EMA or moving average) over a set of parameters.

    Args:
        params: the parameters (or a module, whose parameters are used).
        filter: ``"ema"`` or ``"ma"``.
        alpha: EMA factor in [0, 1) (EMA filter; default 0.98, the paper's EMA run).
        lamb: amplification of the slow component (default 2.0; 5.0 in the paper's MA run).
        window: number of gradients averaged (MA filter; default 100).
        warmup: MA filter only changes gradients once the window is full.
        reduction: ``"mean"`` or ``"sum"`` of the window (MA filter).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | nn.Module,
        filter: str = "ema",
        alpha: float = 0.98,
        lamb: float = 2.0,
        *,
        window: int = 100,
        warmup: bool = True,
        reduction: str = "mean",
    ) -> None:
        check_choice("filter", filter, ("ema", "ma"))
        check_fraction("alpha", alpha, allow_one=False)
        check_non_negative("lamb", lamb)
        check_positive_int("window", window)
        check_choice("reduction", reduction, ("mean", "sum"))
        self.params = list(params.parameters() if isinstance(params, nn.Module) else params)
        if not self.params:
            raise ValueError("Grokfast got no parameters to filter.")
        for index, param in enumerate(self.params):
            sharding.check_param(param, f"Grokfast parameter {index}")
        self.filter, self.alpha, self.lamb = filter, alpha, lamb
        self.window, self.warmup, self.reduction = window, warmup, reduction
        #: per parameter index: {"ema": h} or {"history": (window, *shape) ring buffer, "count": n}
        self.state: dict[int, dict[str, Any]] = {}

    @torch.no_grad()
    def step(self) -> None:
        """Filter every parameter's ``.grad`` in place."""
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise ValueError(f"Grokfast: parameter {index} has a sparse gradient; it filters dense gradients.")
            if self.filter == "ema":
                self._ema(index, param.grad)
            else:
                self._moving_average(index, param.grad)

    def _ema(self, index: int, grad: torch.Tensor) -> None:
        if index not in self.state:
            self.state[index] = {"ema": grad.detach().clone()}  # a DTensor for a DTensor gradient
            sharding.local(grad).add_(sharding.local(self.state[index]["ema"]), alpha=self.lamb)
            return
        ema, grad = sharding.local(self.state[index]["ema"]), sharding.local(grad)
        ema.mul_(self.alpha).add_(grad, alpha=1 - self.alpha)
        grad.add_(ema, alpha=self.lamb)

    def _moving_average(self, index: int, grad: torch.Tensor) -> None:
        state = self.state.get(index)
        if state is None:
            history = sharding.stacked_zeros(grad, self.window)
            state = self.state[index] = {"history": history, "count": 0}
        history, count = sharding.local(state["history"]), state["count"]
        grad = sharding.local(grad)
        history[count % self.window].copy_(grad)
        state["count"] = count = count + 1
        filled = min(count, self.window)
        if self.warmup and filled < self.window:
            return
        total = history[:filled].sum(dim=0)
        slow = total / filled if self.reduction == "mean" else total
        grad.add_(slow, alpha=self.lamb)

    def attach(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        """Run :meth:`step` before every ``optimizer.step()`` (a step pre-hook); returns the hook's handle."""
        return optimizer.register_step_pre_hook(lambda _optimizer, _args, _kwargs: self.step())

    def state_dict(self) -> dict[str, Any]:
        """The filter's settings and state (tensors and ints; loads with ``torch.load(weights_only=True)``)."""
        settings = dict(
            filter=self.filter,
            alpha=self.alpha,
            lamb=self.lamb,
            window=self.window,
            warmup=self.warmup,
            reduction=self.reduction,
        )
        return {"settings": settings, "state": {i: dict(s) for i, s in self.state.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the settings and parameter shapes must match."""
        settings = state_dict["settings"]
        mine = self.state_dict()["settings"]
        if settings != mine:
            raise ValueError(f"Cannot load Grokfast state saved with settings {settings} into a filter with {mine}.")
        state: dict[int, dict[str, Any]] = {}
        for index, saved in state_dict["state"].items():
            index = int(index)
            if not 0 <= index < len(self.params):
                raise ValueError(f"Cannot load Grokfast state: parameter index {index} out of range.")
            param = self.params[index]
            tensor = saved["ema"] if "ema" in saved else saved["history"]
            expected = tuple(param.shape) if "ema" in saved else (self.window, *param.shape)
            if tuple(tensor.shape) != expected:
                raise ValueError(
                    f"Cannot load Grokfast state for parameter {index}: shape {tuple(tensor.shape)}, expected "
                    f"{expected}; it was saved for another model."
                )
            state[index] = {k: v.to(param.device) if torch.is_tensor(v) else v for k, v in saved.items()}
        self.state = state
