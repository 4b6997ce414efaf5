"""Several optimizers, each over its own parameters, behaving as one ``torch.optim.Optimizer``.

What a per-module choice of method needs (``memopt.build_optimizer(model, {"linear_weight": "adamw_snsm",
"embedding": "adamw8bit", "*": "adamw"})``): each part keeps its own class, state and state format, and
the whole is one optimizer to a training loop, an LR scheduler and a checkpoint:

* ``param_groups`` is the list of every part's groups, *the same dict objects*, so a scheduler or a user
  that sets ``group["lr"]`` changes the part's own group;
* ``state`` is a live read-only view of every part's state (what :func:`memopt.state_bytes` counts);
* ``step()`` steps every part in order; ``zero_grad()``, step hooks and ``add_param_group`` are
  torch's (a new group goes to the part named by its ``"part"`` key);
* ``state_dict()`` holds each part's own ``state_dict()`` under its label, and ``load_state_dict`` checks
  that the labels and classes match before loading any part.

torch has no such container (``torch.optim`` keeps one class per optimizer), hence this one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer


class _PartsState(Mapping):
    """``param -> state`` over every part, read live from the parts."""

    def __init__(self, optimizers: Sequence[Optimizer]) -> None:
        self._optimizers = optimizers

    def __getitem__(self, param: torch.Tensor) -> dict:
        for optimizer in self._optimizers:
            if param in optimizer.state:
                return optimizer.state[param]
        raise KeyError(param)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for optimizer in self._optimizers:
            yield from optimizer.state

    def __len__(self) -> int:
        return sum(len(optimizer.state) for optimizer in self._optimizers)


class ChainedOptimizer(Optimizer):
    """One optimizer made of labelled parts, each a ``torch.optim.Optimizer`` over disjoint parameters.

    Args:
        parts: ``(label, optimizer)`` pairs; labels are unique, parameters are not shared between parts.
            Optimizers whose ``step`` must re-evaluate the model (``needs_closure``) cannot be parts: the
            closure would recompute every part's gradients in the middle of the step.
    """

    def __init__(self, parts: Sequence[tuple[str, Optimizer]]) -> None:
        if not parts:
            raise ValueError("ChainedOptimizer needs at least one (label, optimizer) part.")
        labels = [label for label, _ in parts]
        if len(set(labels)) != len(labels):
            raise ValueError(f"ChainedOptimizer part labels must be unique, got {labels}.")
        for label, optimizer in parts:
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"Part {label!r} is a {type(optimizer).__name__}, not a torch.optim.Optimizer.")
            if getattr(optimizer, "needs_closure", False):
                raise ValueError(
                    f"Part {label!r} ({type(optimizer).__name__}) needs optimizer.step(closure), which would "
                    "recompute the other parts' gradients in the middle of a step. Give it every parameter of "
                    "the model (build_optimizer(model, name)) instead of a part of a partition."
                )
        self.labels = labels
        self.optimizers = [optimizer for _, optimizer in parts]
        self._assembled = False
        # torch's constructor checks that no parameter is in two groups and sets up hooks; the groups it
        # keeps are the parts' own dicts (add_param_group appends the dict it is given)
        super().__init__([group for optimizer in self.optimizers for group in optimizer.param_groups], {})
        self.state = _PartsState(self.optimizers)  # type: ignore[assignment]
        self._assembled = True

    def parts(self) -> dict[str, Optimizer]:
        """The parts by label."""
        return dict(zip(self.labels, self.optimizers))

    def __repr__(self) -> str:
        inner = ", ".join(f"{label}={type(opt).__name__}" for label, opt in zip(self.labels, self.optimizers))
        return f"ChainedOptimizer({inner})"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Step every part in order, from the gradients in ``.grad`` (``closure`` is evaluated once first)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the part named by ``param_group["part"]`` (and to this optimizer's view)."""
        if not self._assembled:  # torch's constructor adds the parts' groups
            super().add_param_group(param_group)
            return
        label = param_group.pop("part", None)
        if label not in self.labels:
            raise ValueError(
                f"add_param_group on a ChainedOptimizer needs 'part' set to one of {self.labels}, got {label!r}."
            )
        optimizer = self.optimizers[self.labels.index(label)]
        optimizer.add_param_group(param_group)
        self.param_groups.append(optimizer.param_groups[-1])

    def state_dict(self) -> dict[str, Any]:
        """``{"parts": {label: part.state_dict()}, "classes": {label: class name}}``."""
        return {
            "parts": {label: opt.state_dict() for label, opt in zip(self.labels, self.optimizers)},
            "classes": {label: type(opt).__name__ for label, opt in zip(self.labels, self.optimizers)},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load every part's state; nothing is loaded unless the labels and classes all match."""
        if not isinstance(state_dict, dict) or "parts" not in state_dict:
            raise ValueError(
                "Cannot load this state dict into a ChainedOptimizer: it has no 'parts' (it was saved from a "
                "single optimizer). Load it into the optimizer it was saved from."
            )
        expected = {label: type(opt).__name__ for label, opt in zip(self.labels, self.optimizers)}
        saved = state_dict.get("classes", {})
        if saved != expected:
            raise ValueError(
                f"Cannot load the ChainedOptimizer state: it was saved with parts {saved}, this optimizer has "
                f"{expected}. Build the optimizer with the partition it was saved from."
            )
        for label, optimizer in zip(self.labels, self.optimizers):
            optimizer.load_state_dict(state_dict["parts"][label])
        # torch's load_state_dict gives each part new group dicts: view those
        self.param_groups = [group for optimizer in self.optimizers for group in optimizer.param_groups]
