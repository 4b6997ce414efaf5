"""Which optimizer takes which parameter: a partition of a model's parameters by rules.

A partition maps *selectors* to *choices*, in order; each trainable parameter goes to the first selector
that matches it, and ``"*"`` takes whatever no other selector took::

    {"linear_weight": "adamw_snsm", "embedding": ("adamw8bit", {"lr": 1e-3}), "*": "adamw"}

A selector is

* a parameter kind (:data:`KINDS`): ``"linear_weight"`` (2-D weights of ``nn.Linear``, the Subset-Norm
  paper's compressed set), ``"hidden_linear_weight"`` (the same without the output head, Muon's set:
  :func:`output_head`), ``"linear_bias"``, ``"embedding"``, ``"norm"`` (parameters of modules whose
  class name contains ``Norm``: LayerNorm, RMSNorm, ...), ``"bias"``, ``"matrix"`` (any 2-D parameter),
  ``"vector"`` (0-D and 1-D parameters);
* a glob over parameter names (``"model.layers.*.self_attn.*"``; anything that is not a kind);
* a callable ``(name, param) -> bool`` (e.g. a structure-aware rule such as Adam-mini's per-head blocks).

A choice is a registry name, a ``(name, hparams)`` pair, or a dict with ``"optimizer"`` and hparams.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from memopt.validation import closest_names_hint

ParamRule = Callable[[str, nn.Parameter], bool]
Selector = str | ParamRule
Choice = str | tuple[str, Mapping[str, Any]] | Mapping[str, Any]

REST = "*"


def _module_rule(model: nn.Module, keep: Callable[[nn.Module, str], bool]) -> ParamRule:
    """A rule matching the direct parameters ``p`` (named ``attr``) of modules ``m`` with ``keep(m, attr)``."""
    chosen = {id(p) for m in model.modules() for attr, p in m.named_parameters(recurse=False) if keep(m, attr)}
    return lambda _name, param: id(param) in chosen


def output_head(model: nn.Module) -> nn.Module | None:
    """The module that maps features to outputs: ``model.get_output_embeddings()`` for a ``transformers``
    model (the LM head, whose weight may be tied to the input embedding), else the last ``nn.Linear``
    registered in ``model`` (the final layer of a ``Sequential`` or of a module that defines its layers in
    order); None if there is no ``nn.Linear``."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if isinstance(head, nn.Module):
        return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _hidden_linear_rule(model: nn.Module) -> ParamRule:
    head = output_head(model)
    excluded = {id(p) for p in head.parameters()} if head is not None else set()
    linear = KINDS["linear_weight"](model)
    return lambda name, param: linear(name, param) and id(param) not in excluded


#: parameter kinds by name: each builds the rule for a given model
KINDS: dict[str, Callable[[nn.Module], ParamRule]] = {
    "linear_weight": lambda model: _module_rule(
        model, lambda m, attr: isinstance(m, nn.Linear) and attr == "weight" and m.weight.ndim == 2
    ),
    "hidden_linear_weight": lambda model: _hidden_linear_rule(model),
    "linear_bias": lambda model: _module_rule(model, lambda m, attr: isinstance(m, nn.Linear) and attr == "bias"),
    "embedding": lambda model: _module_rule(model, lambda m, attr: isinstance(m, nn.Embedding) and attr == "weight"),
    "norm": lambda model: _module_rule(model, lambda m, _attr: "Norm" in type(m).__name__),
    "bias": lambda _model: lambda name, _param: name == "bias" or name.endswith(".bias"),
    "matrix": lambda _model: lambda _name, param: param.ndim == 2,
    "vector": lambda _model: lambda _name, param: param.ndim <= 1,
}


@dataclass
class Part:
    """The parameters one selector took, with the optimizer choice for them."""

    label: str
    optimizer: str
    hparams: dict[str, Any]
    named: list[tuple[str, nn.Parameter]] = field(default_factory=list)


def _label(selector: Selector, position: int) -> str:
    if isinstance(selector, str):
        return selector
    return getattr(selector, "__name__", None) or f"rule{position}"


def _rule(model: nn.Module, selector: Selector) -> ParamRule:
    if callable(selector):
        return selector
    if not isinstance(selector, str) or not selector:
        raise ValueError(
            f"Partition selector {selector!r} is neither a parameter kind, a name pattern nor a callable "
            f"(name, param) -> bool. Kinds: {', '.join(KINDS)}."
        )
    if selector in KINDS:
        return KINDS[selector](model)
    return lambda name, _param: fnmatch.fnmatchcase(name, selector)


def _choice(selector: Selector, choice: Choice) -> tuple[str, dict[str, Any]]:
    if isinstance(choice, str):
        return choice, {}
    if isinstance(choice, tuple) and len(choice) == 2 and isinstance(choice[0], str):
        return choice[0], dict(choice[1])
    if isinstance(choice, Mapping) and isinstance(choice.get("optimizer"), str):
        hparams = dict(choice)
        return hparams.pop("optimizer"), hparams
    raise ValueError(
        f"Partition choice {choice!r} for selector {selector!r}: give a registry name, a (name, hparams) pair "
        "or a dict with 'optimizer' and hyperparameters, e.g. ('adamw', {'lr': 1e-3})."
    )


def partition(model: nn.Module, rules: Mapping[Selector, Choice]) -> list[Part]:
    """Split the trainable parameters of ``model`` by ``rules`` (first matching selector; ``"*"`` last).

    Raises:
        ValueError: an empty partition, a selector that matches no parameter (a typo, or a kind the model
            does not have), or parameters that no selector takes when there is no ``"*"``.
    """
    if not rules:
        raise ValueError("The partition is empty; map at least one selector (or '*') to an optimizer name.")
    ordered = [s for s in rules if not (isinstance(s, str) and s == REST)]
    parts = []
    for position, selector in enumerate(ordered):
        name, hparams = _choice(selector, rules[selector])
        parts.append((Part(_label(selector, position), name, hparams), _rule(model, selector)))
    rest = None
    if REST in rules:
        name, hparams = _choice(REST, rules[REST])
        rest = Part(REST, name, hparams)
    unmatched = []
    for param_name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        target = next((part for part, rule in parts if rule(param_name, param)), rest)
        if target is None:
            unmatched.append(param_name)
        else:
            target.named.append((param_name, param))
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        raise ValueError(
            f"No selector of the partition takes the parameters {shown}. Add '*': NAME for the rest of the model."
        )
    for part, _ in parts:
        if not part.named:
            hint = closest_names_hint(part.label, KINDS) if isinstance(part.label, str) else ""
            raise ValueError(
                f"Partition selector {part.label!r} matches no trainable parameter of the model.{hint} Kinds: "
                f"{', '.join(KINDS)}; any other string is a glob over parameter names such as "
                f"{next(iter(n for n, _ in model.named_parameters()), 'layer.weight')!r}."
            )
    chosen = [part for part, _ in parts]
    if rest is not None and rest.named:
        chosen.append(rest)
    return chosen
