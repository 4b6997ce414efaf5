"""Techniques that change how a model's layers are trained, not the optimizer: weight normalization and TrAct.

* :func:`apply_weight_norm`: Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to
  Accelerate Training of Deep Neural Networks", arXiv 1602.07868. Every ``nn.Linear`` and ``nn.Conv2d``
  weight becomes ``w = g v / ||v||`` per output unit (row / output channel), through PyTorch's own
  ``torch.nn.utils.parametrizations.weight_norm`` (``dim=0``); ``g`` and ``v`` are new Parameters
  (``parametrizations.weight.original0`` / ``original1``) initialised so that ``w`` is unchanged, and the
  optimizer is built over them afterwards. Embeddings and norms are left alone. Like the paper's CIFAR
  models it changes the parameterisation only (the paper's data-dependent initialisation is not applied).
  Registry methods that treat ``nn.Linear`` weights specially (``split="linear"``, the Subset-Norm family)
  see ``g`` and ``v`` as ordinary parameters.
* :func:`apply_tract`: :func:`memopt.wrappers.tract.tract` on the model's first ``nn.Linear`` / ``nn.Conv2d``
  in module order (a ResNet's stem, a ViT's patch embedding). It is for image models: a language model's
  first layer is an embedding of token ids, which TrAct does not apply to (a :class:`ConfigError` says so).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrizations

from memopt.harness.train.errors import ConfigError
from memopt.wrappers.tract import tract

__all__ = ["apply_tract", "apply_weight_norm", "first_layer"]

_WEIGHT_NORMED = (nn.Linear, nn.Conv2d)


def apply_weight_norm(model: nn.Module) -> int:
    """Weight-normalize every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` in place; return how many.

    Raises:
        ConfigError: the model has no such layer, or a weight is tied to another module's (an LM's tied
            embedding and output layer).
    """
    layers = [m for m in model.modules() if isinstance(m, _WEIGHT_NORMED)]
    if not layers:
        raise ConfigError("--weight-norm: the model has no nn.Linear or nn.Conv2d layer to normalize.")
    owners: dict[int, int] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            owners[id(param)] = owners.get(id(param), 0) + 1
    for layer in layers:
        if owners.get(id(layer.weight), 0) > 1:
            raise ConfigError(
                f"--weight-norm: the weight of a {type(layer).__name__} is shared with another module (tied "
                "embeddings); weight normalization would untie it. Use a model with untied weights."
            )
    for layer in layers:
        parametrizations.weight_norm(layer, name="weight", dim=0)
    return len(layers)


def first_layer(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """The first ``nn.Linear`` / ``nn.Conv2d`` in module order, as (its parent, its attribute name, it).

    Raises:
        ConfigError: an ``nn.Embedding`` comes first (a language model), or there is no such layer.
    """
    for parent_name, parent in model.named_modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Embedding):
                raise ConfigError(
                    f"--tract: the model's first layer is an nn.Embedding ({parent_name + '.' if parent_name else ''}"
                    f"{name}), which takes token ids; TrAct is for image models whose first layer is an nn.Linear "
                    "or nn.Conv2d on pixels (see `memopt experiment tract`)."
                )
            if isinstance(child, (nn.Linear, nn.Conv2d)):
                return parent, name, child
    raise ConfigError("--tract: the model has no nn.Linear or nn.Conv2d layer.")


def apply_tract(model: nn.Module, lambda_: float) -> nn.Module:
    """Replace the first layer of ``model`` by its TrAct version (sharing its parameters); return the layer.

    Raises:
        ConfigError: no suitable first layer (see :func:`first_layer`) or a bad ``lambda_``.
    """
    parent, name, layer = first_layer(model)
    try:
        new = tract(layer, lambda_)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--tract {lambda_}: {exc}") from exc
    setattr(parent, name, new)
    return new
