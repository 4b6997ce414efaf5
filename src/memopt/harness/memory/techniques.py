"""The techniques that cut training memory, as data: what to change in a run, checked before it starts.

A :class:`Techniques` value describes one mix. The memory planner (:mod:`memopt.harness.memory.profile`), the
training harness (``memopt train``) and the memory study all read the same fields:

* ``microbatches``: gradient accumulation; the batch is split into this many microbatches, one forward
  and backward each, before one optimizer step. Activations scale with the microbatch.
* ``checkpointing``: activation checkpointing (``torch.utils.checkpoint``); each block keeps only its
  input and recomputes the rest in backward.
* ``precision``: ``"fp32"``; ``"bf16-autocast"`` (fp32 parameters, bf16 compute via ``torch.autocast``);
  ``"bf16"`` (bf16 parameters, gradients and state, round to nearest); ``"bf16-sr"`` (the same with the
  optimizer's stochastic rounding of parameters and bf16 states, :mod:`memopt.state.rounding`);
  ``"bf16-master"`` (bf16 parameters and gradients, an fp32 master copy that the optimizer updates,
  :mod:`memopt.wrappers.master_weights`).
* ``sparsity``: the fraction of prunable weights set to zero by magnitude pruning and kept zero
  (:mod:`memopt.harness.memory.sparsity`); ``sparse_storage`` is ``"compact"`` (nonzeros and their indices only)
  or ``"mask"`` (``torch.nn.utils.prune``'s dense weight and mask).
* the optimizer itself (memopt's compressed-state optimizers) is chosen by name beside the techniques.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from memopt.harness.train.choices import PRECISIONS, SPARSE_STORAGES, check_choice
from memopt.harness.train.errors import ConfigError

__all__ = ["PRECISIONS", "SPARSE_STORAGES", "Techniques", "check_sparsity", "enable_activation_checkpointing"]


def check_sparsity(sparsity: float) -> None:
    """Raise :class:`ConfigError` unless ``sparsity`` (the fraction of weights pruned) is in [0, 1)."""
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"--sparsity {sparsity}: the fraction of weights pruned must be in [0, 1), e.g. 0.9 for 90%.")


@dataclass(frozen=True)
class Techniques:
    """One mix of memory-saving techniques (see the module docstring)."""

    microbatches: int = 1
    checkpointing: bool = False
    precision: str = "fp32"
    sparsity: float = 0.0
    sparse_storage: str = "compact"

    def validate(self, batch_size: int | None = None) -> None:
        """Raise :class:`ConfigError` naming the first bad value and the fix.

        Args:
            batch_size: the batch the microbatches split; checked for divisibility when given.
        """
        if not isinstance(self.microbatches, int) or self.microbatches < 1:
            raise ConfigError(f"--microbatches {self.microbatches}: must be a positive integer (1 = no accumulation).")
        if batch_size is not None:
            if batch_size < 1:
                raise ConfigError(f"--batch-size {batch_size}: must be a positive integer.")
            if batch_size % self.microbatches:
                divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
                raise ConfigError(
                    f"--microbatches {self.microbatches}: does not divide --batch-size {batch_size} into equal "
                    f"microbatches. Choose one of {', '.join(map(str, divisors))}, or change the batch."
                )
        check_choice("--precision", self.precision, PRECISIONS)
        check_sparsity(self.sparsity)
        check_choice("--sparse-storage", self.sparse_storage, SPARSE_STORAGES)

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype the model's parameters are held in."""
        return torch.bfloat16 if self.precision in ("bf16", "bf16-sr", "bf16-master") else torch.float32

    @property
    def autocast(self) -> bool:
        """Whether the forward pass runs under bf16 autocast."""
        return self.precision == "bf16-autocast"

    def optimizer_hparams(self) -> dict[str, Any]:
        """Hyperparameters the precision adds to the optimizer's (stochastic rounding for ``bf16-sr``)."""
        return {"stochastic_rounding": True} if self.precision == "bf16-sr" else {}

    def changes(self) -> list[str]:
        """The fields that differ from no technique at all, e.g. ``["microbatches", "precision"]``."""
        default = Techniques()
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(default, f.name)]

    def without(self, name: str) -> Techniques:
        """This mix with the technique ``name`` (a field) set back to none."""
        return dataclasses.replace(self, **{name: getattr(Techniques(), name)})

    def label(self) -> str:
        """A short name, e.g. ``"mb8+ckpt+bf16-sr+sp0.9"`` (``"baseline"`` for none)."""
        parts = []
        if self.microbatches > 1:
            parts.append(f"mb{self.microbatches}")
        if self.checkpointing:
            parts.append("ckpt")
        if self.precision != "fp32":
            parts.append(self.precision)
        if self.sparsity:
            parts.append(f"sp{self.sparsity:g}" + ("-mask" if self.sparse_storage == "mask" else ""))
        return "+".join(parts) or "baseline"

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-compatible dict."""
        return dataclasses.asdict(self)


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in backward (``transformers``' own switch)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
