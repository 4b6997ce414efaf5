"""bf16 parameters with a float32 master copy: the mixed-precision recipe of Micikevicius et al. (2018).

The model the forward pass uses holds bf16 parameters and receives bf16 gradients. A float32 copy of each
parameter (the *master*) is what the optimizer updates: at each step every bf16 gradient is converted to a
float32 gradient of its master (and the bf16 gradient freed), the wrapped optimizer steps the masters, and
the result is rounded to nearest back into the bf16 parameters. Memory per parameter: 2 (bf16) + 4
(master) bytes, bf16 gradients during backward, float32 gradients during the step.

torch has no such wrapper for bf16 (``torch.autocast`` keeps float32 parameters instead), hence this one.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer


def master_copy(model: nn.Module) -> nn.Module:
    """A float32 copy of ``model`` (the masters); call before converting ``model`` to bf16.

    The modules are deep-copied; each parameter and buffer is cloned by the current tensor mode (so that
    fake tensors stay in the planner's fake mode, which ``deepcopy`` of a tensor would not do)."""
    memo: dict[int, torch.Tensor] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in memo:
            continue
        clone = tensor.detach().clone()
        if clone.is_floating_point():
            clone = clone.float()
        memo[id(tensor)] = nn.Parameter(clone, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else clone
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*data pointer of FakeTensor.*")
        return copy.deepcopy(model, memo)


class MasterWeightOptimizer(Optimizer):
    """Steps float32 masters with ``inner`` and copies them into the bf16 parameters of the model.

    ``param_groups`` and ``state`` are the inner optimizer's, so LR schedulers and
    :func:`memopt.state_bytes` see through the wrapper; ``state_dict()`` holds the inner state and the
    masters, so a checkpoint resumes exactly.

    Args:
        model: the bf16 model that runs forward and backward.
        master: its float32 copy (:func:`master_copy`), with the same parameter order.
        build: ``build(master) -> Optimizer``, the optimizer of the masters.
    """

    def __init__(self, model: nn.Module, master: nn.Module, build: Callable[[nn.Module], Optimizer]):
        self.pairs = [(p, m) for p, m in zip(model.parameters(), master.parameters(), strict=True) if p.requires_grad]
        for p, m in self.pairs:
            if p.shape != m.shape:
                raise ValueError(f"master copy has shape {tuple(m.shape)} where the model has {tuple(p.shape)}")
        self.master = master
        self.inner = build(master)
        self._own: dict[str, Any] = {}  # what Optimizer.__init__ sets, before the inner ones take over
        super().__init__([m for _, m in self.pairs], {})
        self._own = None
        self.defaults = self.inner.defaults

    # the inner optimizer's groups and state, also after its load_state_dict replaces them
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups if self._own is None else self._own["param_groups"]

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        if self._own is None:
            self.inner.param_groups = value
        else:
            self._own["param_groups"] = value

    @property
    def state(self) -> dict:
        return self.inner.state if self._own is None else self._own["state"]

    @state.setter
    def state(self, value: dict) -> None:
        if self._own is None:
            self.inner.state = value
        else:
            self._own["state"] = value

    @property
    def needs_closure(self) -> bool:
        return getattr(self.inner, "needs_closure", False)

    def masters(self) -> list[torch.Tensor]:
        """The float32 master tensors."""
        return [m for _, m in self.pairs]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is not None:
            raise ValueError("MasterWeightOptimizer does not take a closure; use an optimizer without needs_closure.")
        for p, m in self.pairs:
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None
        loss = self.inner.step()
        for p, m in self.pairs:
            m.grad = None
            p.copy_(m)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p, m in self.pairs:
            for t in (p, m):
                if set_to_none:
                    t.grad = None
                elif t.grad is not None:
                    t.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "masters": [m.detach().clone() for m in self.masters()]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict["inner"])
        with torch.no_grad():
            for (p, m), saved in zip(self.pairs, state_dict["masters"], strict=True):
                m.copy_(saved)
                p.copy_(m)
