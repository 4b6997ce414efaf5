"""Sparsity: magnitude pruning of the weight matrices to a target sparsity, kept through training.

Every ``nn.Linear`` and ``nn.Conv*`` weight keeps its ``1 - sparsity`` largest-magnitude entries (the same
fraction in every layer, so the number of nonzeros of each layer follows from its shape alone and the
planner can count it without data). The pruned entries stay zero for the whole run, in one of two
storages:

* ``"compact"`` (saves memory): the weight becomes a ``torch.nn.utils.parametrize`` parametrization whose
  trainable tensor holds the nonzeros only, with their flat positions in an int32 buffer (the mask, kept
  through training). Each forward scatters them into a dense weight, which the layer uses and autograd
  may save; gradients, optimizer state and the parameter itself are ``nnz`` long.
* ``"mask"`` (the reference, saves nothing): ``torch.nn.utils.prune``'s reparametrization, a dense
  ``weight_orig`` parameter and a dense ``weight_mask`` buffer multiplied in each forward.

Both storages prune the same entries. The kept entries are chosen with ``torch.topk`` on the magnitudes,
which is what ``torch.nn.utils.prune.L1Unstructured`` does; ``topk`` has a fixed output shape, so pruning
also runs on fake tensors when the planner estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from memopt.harness.memory.techniques import check_sparsity
from memopt.harness.train.choices import SPARSE_STORAGES, check_choice
from memopt.harness.train.errors import ConfigError

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class CompactSparse(nn.Module):
    """Parametrization of a pruned weight by its nonzeros: ``weight = scatter(values, indices)``.

    Args:
        indices: int32 flat positions of the kept entries (sorted).
        shape: the dense weight's shape.
    """

    def __init__(self, indices: torch.Tensor, shape: torch.Size):
        super().__init__()
        self.register_buffer("indices", indices)
        self.shape = torch.Size(shape)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        # in place into the fresh zeros: one dense weight alive, not two
        dense = values.new_zeros(self.shape.numel())
        return dense.index_put_((self.indices,), values).view(self.shape)

    def right_inverse(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.reshape(-1)[self.indices]


@dataclass(frozen=True)
class SparsityReport:
    """What pruning did: ``kept`` of ``total`` prunable weights remain, in ``layers`` weight tensors."""

    kept: int
    total: int
    layers: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.total if self.total else 0.0


def prunable_weights(model: nn.Module) -> list[nn.Module]:
    """The modules whose ``weight`` is pruned: linear and convolution layers."""
    return [m for m in model.modules() if isinstance(m, _PRUNABLE)]


def kept_count(numel: int, sparsity: float) -> int:
    """Entries a weight of ``numel`` entries keeps at ``sparsity``: ``numel - round(sparsity * numel)``, at least 1."""
    return max(1, numel - round(sparsity * numel))


def prune_model(model: nn.Module, sparsity: float, storage: str = "compact") -> SparsityReport:
    """Prune every linear and convolution weight of ``model`` to ``sparsity`` by magnitude, in place.

    Call before building the optimizer (in ``"compact"`` storage the trainable tensors change).

    Raises:
        ConfigError: ``sparsity`` outside [0, 1), an unknown ``storage``, or nothing to prune.
    """
    check_sparsity(sparsity)
    check_choice("--sparse-storage", storage, SPARSE_STORAGES)
    modules = prunable_weights(model)
    if not modules:
        raise ConfigError(f"--sparsity {sparsity}: the model has no nn.Linear or nn.Conv layer to prune.")
    kept = total = 0
    for module in modules:
        weight = module.weight.detach()
        count = kept_count(weight.numel(), sparsity)
        indices = torch.topk(weight.abs().reshape(-1), count, sorted=False).indices
        indices = torch.sort(indices).values.to(torch.int32)
        if storage == "mask":
            mask = torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
            mask[indices] = 1
            prune.custom_from_mask(module, "weight", mask.view(weight.shape))
        else:
            parametrize.register_parametrization(module, "weight", CompactSparse(indices, weight.shape), unsafe=True)
        kept += count
        total += weight.numel()
    return SparsityReport(kept=kept, total=total, layers=len(modules))
