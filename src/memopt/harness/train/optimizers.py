"""The harness's one seam to the optimizer registry, and parsing of ``--opt KEY=VALUE`` hyperparameters.

The harness takes any registry name: names, defaults and construction all come from
:func:`memopt.list_optimizers`, :func:`memopt.registry.specs.recommended_hparams` and
:func:`memopt.build_optimizer`, so a new optimizer needs no change here.

One hyperparameter is the harness's own and works with every optimizer: ``plain_lr``, the learning rate
of the *plain group*, every parameter that is not the 2-D weight of an ``nn.Linear`` (embeddings, norms,
biases). The Subset-Norm presets already keep those parameters in a group of their own, which ``plain_lr``
sets apart; an optimizer that treats all parameters alike (AdamW, Adafactor, ...) is given the same two
groups, so that AdamW with per-group learning rates can be compared with the compressed presets (their
effect is then not mixed up with a larger learning rate on the embeddings).
"""

from __future__ import annotations

import ast
from typing import Any

import torch

from memopt.harness.train.choices import closest
from memopt.harness.train.errors import ConfigError, reason
from memopt.registry import specs as registry
from memopt.state.accounting import state_bytes as count_state_bytes

#: the harness's own hyperparameter: the learning rate of the plain group (see the module's docstring)
PLAIN_LR = "plain_lr"


def optimizer_names() -> dict[str, str]:
    """Registry names with their one-line descriptions."""
    return dict(registry.list_optimizers())


def check_name(name: str) -> None:
    """Raise :class:`ConfigError` with the closest names if ``name`` is not in the registry."""
    names = optimizer_names()
    if name not in names:
        raise ConfigError(
            f"--optimizer {name!r}: unknown optimizer{closest(name, names)}. Run `memopt list` to see all {len(names)}."
        )


def recommended_hparams(name: str) -> dict[str, Any]:
    """The registry's documented defaults for LM pretraining with ``name`` (e.g. its learning rate)."""
    check_name(name)
    return dict(registry.recommended_hparams(name))


def accepted_hparams(name: str) -> set[str]:
    """Hyperparameters the registry's ``name`` accepts, and the harness's :data:`PLAIN_LR`."""
    return set(registry.accepted_hparams(name)) | {PLAIN_LR}


def size_hparams(name: str, hidden_size: int | None) -> dict[str, Any]:
    """Hyperparameters that scale with the model: a subspace ``rank`` of ``hidden_size // 4``.

    That is the Subset-Norm / Subspace-Momentum papers' rule (rank 128 for the 60M model of hidden size
    512, 512 for the 1B model of 2048); a fixed rank would be full rank, and save nothing, on small models.
    Given only to optimizers that take a ``rank``.
    """
    if hidden_size is None or "rank" not in accepted_hparams(name):
        return {}
    return {"rank": max(1, hidden_size // 4)}


def resolve_hparams(
    name: str, overrides: dict[str, Any], lr: float | None, hidden_size: int | None = None
) -> dict[str, Any]:
    """Hyperparameters for ``name``: the registry's recommended ones, then :func:`size_hparams`, then the
    user's ``overrides`` and ``lr``."""
    hparams = recommended_hparams(name)
    for key, value in size_hparams(name, hidden_size).items():
        hparams.setdefault(key, value)
    hparams.update(overrides)
    if lr is not None:
        hparams["lr"] = lr
    return hparams


def build(model: torch.nn.Module, name: str, hparams: dict[str, Any]) -> torch.optim.Optimizer:
    """Build the registry optimizer ``name`` for ``model``.

    Raises:
        ConfigError: the registry rejects the name or a hyperparameter; the message says which.
    """
    check_name(name)
    settings = dict(hparams)
    plain_lr = settings.pop(PLAIN_LR, None)
    try:
        optimizer = registry.build_optimizer(model, name, **settings)
        if plain_lr is not None:
            set_plain_lr(model, optimizer, float(plain_lr))
        return optimizer
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in sorted(hparams.items()))
        raise ConfigError(
            f"--optimizer {name} with {given}: {reason(exc)}. Check the --opt/--lr values; `memopt list` shows "
            "the optimizers."
        ) from exc


def set_plain_lr(model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give the plain group (parameters that are not ``nn.Linear`` weights) the learning rate ``lr``.

    A group holding both kinds is split first: its plain parameters move to a new group with the same
    settings (:meth:`torch.optim.Optimizer.add_param_group`). Call before the first step.

    Raises:
        ValueError: ``lr`` is negative, or the optimizer already has state.
    """
    if not lr >= 0:
        raise ValueError(f"{PLAIN_LR} must be non-negative, got {lr}")
    if any(optimizer.state.values()):
        raise ValueError(f"{PLAIN_LR} is set before the first step; this optimizer already has state")
    is_linear = registry.linear_weight_split(model)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in list(optimizer.param_groups):
        kinds = [is_linear(names.get(id(p), ""), p) for p in group["params"]]
        if not any(kinds):
            group["lr"] = lr
        elif not all(kinds):
            moved = [p for p, linear in zip(group["params"], kinds, strict=True) if not linear]
            group["params"] = [p for p, linear in zip(group["params"], kinds, strict=True) if linear]
            new = {k: v for k, v in group.items() if k not in ("params", "param_names")}
            new.update(params=moved, lr=lr)
            if "param_names" in group:
                all_names = group["param_names"]
                new["param_names"] = [n for n, linear in zip(all_names, kinds, strict=True) if not linear]
                group["param_names"] = [n for n, linear in zip(all_names, kinds, strict=True) if linear]
            optimizer.add_param_group(new)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Exact bytes of the optimizer's state (as counted by :func:`memopt.state_bytes`)."""
    return int(count_state_bytes(optimizer))


def parse_value(text: str) -> Any:
    """Parse a hyperparameter value: a Python literal (``64``, ``1e-3``, ``(0.9, 0.95)``), a boolean
    (``true``/``false``), ``none``, or else the text itself (``svd``)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_scoped(item: str) -> tuple[str | None, str, str, str]:
    """``[SCOPE:]KEY=VALUE`` as ``(scope or None, key, "=" or "" if absent, value)``, stripped."""
    key, sep, value = item.partition("=")
    scope: str | None = None
    if ":" in key:
        scope, _, key = key.partition(":")
        scope = scope.strip()
    return scope, key.strip(), sep, value


def parse_assignments(items: list[str], flag: str = "--opt") -> dict[str | None, dict[str, Any]]:
    """Parse ``KEY=VALUE`` and ``OPTIMIZER:KEY=VALUE`` items into ``{optimizer or None: {key: value}}``.

    The key ``None`` holds assignments for every optimizer.

    Raises:
        ConfigError: an item lacks ``=`` or a key.
    """
    parsed: dict[str | None, dict[str, Any]] = {}
    for item in items:
        scope, key, sep, value = split_scoped(item)
        if not sep or not key.isidentifier():
            raise ConfigError(
                f"{flag} {item!r}: expected KEY=VALUE (or OPTIMIZER:KEY=VALUE), e.g. {flag} rank=64 or "
                f"{flag} adamw_snsm:proj_type=svd."
            )
        parsed.setdefault(scope, {})[key] = parse_value(value)
    return parsed
