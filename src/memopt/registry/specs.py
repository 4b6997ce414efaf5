"""Optimizers by name: ``build_optimizer``, ``list_optimizers`` and each method's recommended settings.

``build_optimizer(model, name, **hparams)`` applies the compressed method (Subset-Norm, Subspace-Momentum)
to the 2-D weights of ``nn.Linear`` modules and the plain method (Adam, AdaGrad, RMSProp) to every other
parameter (embeddings, norms, biases), as the Subset-Norm paper recommends. ``split=`` chooses another set
of compressed parameters. Hyperparameters that only make sense for the compressed group (``subset_size``,
``rank``, ...) go to it alone; all others go to both groups.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from memopt.accelerated import ASGD, NAGGS, MetaSTORM, NesterovAGD, QuasarAGD, STORMPlus
from memopt.optim.baselines import SGD, Adagrad, Adam, AdamW, RMSprop
from memopt.optim.chained import ChainedOptimizer
from memopt.optim.engine import MemoptOptimizer
from memopt.optim.presets import (
    AdaGradNorm,
    AdaGradSN,
    AdaGradSNSM,
    AdamW8bit,
    AdamWSN,
    AdamWSNSM,
    AdamWSNSM8bit,
    RMSPropSN,
    engine_preset,
)
from memopt.registry.partition import KINDS, Choice, Selector, partition
from memopt.validation import closest_names_hint

SplitRule = Callable[[str, nn.Parameter], bool]

_SN_KEYS = ("subset_size",)
_SM_KEYS = ("rank", "update_proj_gap", "proj_type", "proj_policy", "proj_seed", "proj_schedule")


@dataclass(frozen=True)
class OptimizerSpec:
    """How a registry name is built.

    ``compressed_only``: hyperparameters given to the compressed group alone; ``plain_group``: settings of
    the plain group (``None`` switches a compressed estimator off); ``split``: ``"linear"`` puts
    ``nn.Linear`` weights in the compressed group, ``"all"`` puts every parameter in one group;
    ``recommended``: hyperparameters for LLaMA-style pretraining (used by ``memopt compare``);
    ``split_kind``: the parameter kind (:data:`~memopt.registry.partition.KINDS`) of the compressed group
    when ``split="linear"`` and ``build_optimizer`` gets no ``split=``; ``param_settings``: for
    ``split="structure"``, ``param_settings(model)(name, param)`` gives each parameter's group settings
    (parameters with equal settings share a group), e.g. Adam-mini's block kinds.
    """

    name: str
    cls: type[Optimizer]
    description: str
    split: str = "all"
    compressed_only: tuple[str, ...] = ()
    plain_group: dict[str, Any] = field(default_factory=dict)
    recommended: dict[str, Any] = field(default_factory=dict)
    split_kind: str = "linear_weight"
    param_settings: Callable[[nn.Module], Callable[[str, torch.Tensor], dict[str, Any]]] | None = None


_REGISTRY: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"Optimizer name {spec.name!r} is already registered.")
    _REGISTRY[spec.name] = spec
    return spec


#: a module attribute, so that a Lion optimizer pickles (pickle finds a class by its module and name)
Lion = engine_preset(
    "Lion", "Lion (Chen et al. 2023, arXiv 2302.06675): the sign of an EMA interpolation of momentum and gradient; "
    "one buffer (memopt.estimators.lion).", momentum_type="lion", second_moment_type="none", lr=1e-4, betas=(0.9, 0.99),
)

for _spec in (
    OptimizerSpec("sgd", SGD, "SGD with optional heavy-ball/Nesterov momentum (= torch.optim.SGD).",
                  recommended={"lr": 0.1, "momentum": 0.9}),
    OptimizerSpec("adagrad", Adagrad, "AdaGrad, one accumulator per coordinate (= torch.optim.Adagrad).",
                  recommended={"lr": 1e-2}),
    OptimizerSpec("rmsprop", RMSprop, "RMSProp (= torch.optim.RMSprop).", recommended={"lr": 1e-3}),
    OptimizerSpec("adam", Adam, "Adam with coupled L2 weight decay (= torch.optim.Adam).",
                  recommended={"lr": 2e-3}),
    OptimizerSpec("adamw", AdamW, "AdamW, decoupled weight decay (= torch.optim.AdamW); 8 bytes/param state.",
                  recommended={"lr": 2e-3, "weight_decay": 0.0}),
    OptimizerSpec("adamw_sn", AdamWSN,
                  "AdamW with Subset-Norm step sizes on nn.Linear weights (one accumulator per row/column).",
                  split="linear", compressed_only=_SN_KEYS, plain_group={"subset_size": None},
                  recommended={"lr": 2e-2}),
    OptimizerSpec("adamw_snsm", AdamWSNSM,
                  "AdamW-SN plus Subspace-Momentum (low-rank momentum + SGD in the complement) on nn.Linear weights.",
                  split="linear", compressed_only=_SN_KEYS + _SM_KEYS,
                  plain_group={"subset_size": None, "rank": None}, recommended={"lr": 2e-2}),
    OptimizerSpec("adagrad_sn", AdaGradSN,
                  "AdaGrad with Subset-Norm step sizes and EMA momentum on nn.Linear weights.",
                  split="linear", compressed_only=_SN_KEYS, plain_group={"subset_size": None},
                  recommended={"lr": 2e-2}),
    OptimizerSpec("adagrad_snsm", AdaGradSNSM, "AdaGrad-SN plus Subspace-Momentum on nn.Linear weights.",
                  split="linear", compressed_only=_SN_KEYS + _SM_KEYS,
                  plain_group={"subset_size": None, "rank": None}, recommended={"lr": 2e-2}),
    OptimizerSpec("rmsprop_sn", RMSPropSN,
                  "RMSProp with Subset-Norm step sizes on nn.Linear weights (no momentum).",
                  split="linear", compressed_only=_SN_KEYS, plain_group={"subset_size": None},
                  recommended={"lr": 2e-3}),
    OptimizerSpec("adamw8bit", AdamW8bit,
                  "AdamW with both moments stored in 8 bits, block-wise quantized (2.03 bytes/param).",
                  recommended={"lr": 2e-3, "weight_decay": 0.0}),
    OptimizerSpec("adamw_snsm8bit", AdamWSNSM8bit,
                  "AdamW-SNSM with 8-bit momentum (Subset-Norm accumulators and bases in float32).",
                  split="linear", compressed_only=_SN_KEYS + _SM_KEYS,
                  plain_group={"subset_size": None, "rank": None}, recommended={"lr": 2e-2}),
    OptimizerSpec("adagrad_norm", AdaGradNorm,
                  "AdaGrad-Norm: one scalar step size per tensor (global_norm=True: one for the model).",
                  recommended={"lr": 1.0, "momentum": 0.9}),
    OptimizerSpec("lion", Lion,
                  "Lion: sign of an interpolation of momentum and gradient, one buffer (4 bytes/param).",
                  recommended={"lr": 6e-4, "weight_decay": 0.0}),
):  # fmt: skip
    register(_spec)


def get_spec(name: str) -> OptimizerSpec:
    """The registry entry of ``name``; ``ValueError`` with the closest names if unknown."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown optimizer {name!r}.{closest_names_hint(name, _REGISTRY)} "
            f"Known optimizers: {', '.join(sorted(_REGISTRY))} (see memopt.list_optimizers())."
        )
    return _REGISTRY[name]


def list_optimizers() -> dict[str, str]:
    """Registry names with a one-line description each, in registration order."""
    return {name: spec.description for name, spec in _REGISTRY.items()}


def recommended_hparams(name: str) -> dict[str, Any]:
    """Hyperparameters recommended for LLaMA-style pretraining with optimizer ``name`` (a copy)."""
    return dict(get_spec(name).recommended)


#: group options every optimizer of the memopt engine takes through ``build_optimizer``, besides its own:
#: how state is stored, ``foreach=False`` to force the per-tensor reference path, and where eps and decoupled
#: weight decay enter (to reproduce the Subset-Norm authors' runs: README, "Migrating from the papers' code")
ENGINE_GROUP_KEYS = (
    "state_storage", "quant_block_size", "stochastic_rounding", "foreach", "eps_placement", "weight_decay_placement",
)


def accepted_hparams(name: str) -> list[str]:
    """The hyperparameters ``build_optimizer(model, name, ...)`` accepts: the preset's arguments, and for
    engine presets the group options :data:`ENGINE_GROUP_KEYS` (e.g. ``state_storage="bfloat16"`` or ``"8bit"``)."""
    cls = get_spec(name).cls
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params", "settings")]
    if issubclass(cls, MemoptOptimizer):
        names += [k for k in ENGINE_GROUP_KEYS if k not in names]
    return names


def linear_weight_split(model: nn.Module) -> SplitRule:
    """The default rule: a parameter is compressed if it is the 2-D weight of an ``nn.Linear``."""
    return KINDS["linear_weight"](model)


def build_optimizer(
    model: nn.Module, name: str | Mapping[Selector, Choice], *, split: SplitRule | None = None, **hparams: Any
) -> Optimizer:
    """Build the registry optimizer ``name`` for the trainable parameters of ``model``, or one optimizer per
    part of a partition.

    ``name`` is a registry name, or a partition (:mod:`memopt.registry.partition`) such as
    ``{"linear_weight": "adamw_snsm", "embedding": "adamw8bit", "*": "adamw"}``: each part gets its own
    registry optimizer (its hyperparameters from the partition, then the shared ``hparams`` it accepts),
    combined into one :class:`~memopt.optim.chained.ChainedOptimizer` (a single part is returned as is).

    ``split(name, param) -> bool`` selects the compressed parameters (default: ``nn.Linear`` weights for
    the Subset-Norm family, the hidden ones for Muon: the spec's ``split_kind``; ignored by optimizers that
    treat every parameter alike). Parameter groups carry ``param_names`` so that error messages name the
    parameter.
    """

    def rule(registry_name: str) -> SplitRule | Callable[[str, torch.Tensor], dict[str, Any]]:
        spec = get_spec(registry_name)
        if spec.split == "structure":
            return spec.param_settings(model)
        return split or KINDS[spec.split_kind](model)

    if isinstance(name, str):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(f"The model has no trainable parameters to optimize with {name!r}.")
        return _build_named(name, named, rule(name), hparams)
    if not isinstance(name, Mapping):
        raise TypeError(f"build_optimizer takes a registry name or a partition dict, got {type(name).__name__}.")
    parts = partition(model, name)
    shared_unused = set(hparams)
    optimizers = []
    for part in parts:
        accepted = accepted_hparams(part.optimizer)
        shared = {k: v for k, v in hparams.items() if k in accepted}
        shared_unused -= set(shared)
        built = _build_named(part.optimizer, part.named, rule(part.optimizer), {**shared, **part.hparams})
        optimizers.append((part.label, built))
    if shared_unused:
        raise ValueError(
            f"No optimizer of the partition takes the hyperparameters {sorted(shared_unused)}; give them to the "
            "part that needs them, e.g. {'linear_weight': ('adamw_sn', {'subset_size': 64}), ...}."
        )
    return optimizers[0][1] if len(optimizers) == 1 else ChainedOptimizer(optimizers)


def _build_named(
    name: str, named: list[tuple[str, torch.Tensor]], rule: SplitRule, hparams: dict[str, Any]
) -> Optimizer:
    """The registry optimizer ``name`` over the parameters ``named``; ``rule`` picks the compressed ones."""
    spec = get_spec(name)
    hparams = dict(hparams)
    accepted = accepted_hparams(name)
    for key in hparams:
        if key not in accepted:
            raise ValueError(
                f"Optimizer {name!r} has no hyperparameter {key!r}.{closest_names_hint(key, accepted)} "
                f"Accepted: {', '.join(accepted)}."
            )
    group_settings = {k: hparams.pop(k) for k in ENGINE_GROUP_KEYS if k in hparams and k not in _signature(spec.cls)}
    if spec.split == "all":
        groups = [_group(named, **group_settings)]
    elif spec.split == "structure":  # ``rule`` gives each parameter's settings
        by_settings: dict[str, tuple[dict[str, Any], list]] = {}
        for n, p in named:
            settings = rule(n, p)
            by_settings.setdefault(repr(sorted(settings.items())), (settings, []))[1].append((n, p))
        groups = [_group(members, **settings, **group_settings) for settings, members in by_settings.values()]
    else:
        compressed = [(n, p) for n, p in named if rule(n, p)]
        plain = [(n, p) for n, p in named if not rule(n, p)]
        compressed_settings = {k: hparams.pop(k) for k in spec.compressed_only if k in hparams}
        groups = []
        if compressed:
            groups.append(_group(compressed, **compressed_settings, **group_settings))
        if plain:
            groups.append(_group(plain, **spec.plain_group, **group_settings))
    return spec.cls(groups, **hparams)


def _signature(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters)


def _group(named: list[tuple[str, torch.Tensor]], **settings: Any) -> dict[str, Any]:
    return {"params": [p for _, p in named], "param_names": [n for n, _ in named], **settings}


# Adafactor and extreme tensoring: every parameter in one group (split="all"), as both papers apply their
# factored / tensored statistics to the whole model. Learning rates: starting points that lower the loss of
# the harness's tiny preset (tests/train), not tuned; ET's steps shrink like numel^((p-1)/2p), hence larger lr.
from memopt.optim.adafactor import Adafactor  # noqa: E402
from memopt.optim.tensoring import ETAdaGrad, ETAdam  # noqa: E402

for _spec in (
    OptimizerSpec("adafactor", Adafactor,
                  "Adafactor: factored row/column second moments, relative step, update clipping (= transformers').",
                  recommended={"lr": 1e-2, "relative_step": False, "scale_parameter": False}),
    OptimizerSpec("et_adagrad", ETAdaGrad,
                  "AdaGrad with an extreme-tensoring preconditioner: sum of mode sizes per tensor (et_order=3).",
                  recommended={"lr": 1.0}),
    OptimizerSpec("et_adam", ETAdam,
                  "Adam with an extreme-tensoring second moment (EMA form of ET) and decoupled weight decay.",
                  recommended={"lr": 0.1}),
):  # fmt: skip
    register(_spec)


# Accelerated and variance-reduced methods (memopt.accelerated). Their recommended settings are starting points for
# LM pretraining checked on a tiny LLaMA (docs/experiments.md), not tuned at scale; meta_storm, storm_plus, quasar_agd
# and nesterov_agd need optimizer.step(closure) (needs_closure = True).
for _spec in (
    OptimizerSpec("nag_gs", NAGGS, "NAG-GS: semi-implicit accelerated heavy ball (lr = alpha, mu, gamma); 1 buffer.",
                  recommended={"lr": 0.3, "mu": 0.1301, "gamma": 0.3554}),
    OptimizerSpec("meta_storm", MetaSTORM,
                  "META-STORM: adaptive STORM variance reduction; step(closure), 2 gradients per step.",
                  recommended={"lr": 3e-3, "per_coordinate": True, "ema": True, "bias_correction": True}),
    OptimizerSpec("storm_plus", STORMPlus, "STORM+: fully adaptive STORM (META-STORM's baseline); step(closure).",
                  recommended={"lr": 1e-2, "b0": 1e-8, "per_coordinate": True, "ema": True, "bias_correction": True}),
    OptimizerSpec("quasar_agd", QuasarAGD,
                  "AGD for quasar-convex functions with its line search (lr = 1/L); step(closure), deterministic.",
                  recommended={"lr": 0.1, "gamma": 0.5}),
    OptimizerSpec("nesterov_agd", NesterovAGD, "Nesterov's AGD (quasar AGD with gamma = 1, no search); step(closure).",
                  recommended={"lr": 0.1}),
    OptimizerSpec("asgd", ASGD, "Accelerated SGD (Jain et al.; AccSGD form: lr, kappa, xi, small_const); 1 buffer.",
                  recommended={"lr": 0.3, "kappa": 1000.0, "xi": 10.0, "small_const": 0.7}),
):  # fmt: skip
    register(_spec)


# Riemannian optimizers (memopt.riemannian, Bécigneul & Ganea ICLR 2019): ManifoldParameters step on their
# manifold, every other parameter as Euclidean (then they equal torch.optim.SGD / Adam / Adagrad). Recommended
# settings are the Euclidean starting points of their torch counterparts, not tuned for manifold problems.
from memopt.riemannian import RiemannianAdagrad, RiemannianAdam, RiemannianAMSGrad, RiemannianSGD  # noqa: E402

for _spec in (
    OptimizerSpec("riemannian_sgd", RiemannianSGD,
                  "Riemannian SGD: retraction step, momentum transported; SGD on plain parameters.",
                  recommended={"lr": 0.1, "momentum": 0.9}),
    OptimizerSpec("riemannian_adam", RiemannianAdam,
                  "Riemannian Adam (RADAM): one second moment per manifold point, momentum transported.",
                  recommended={"lr": 2e-3}),
    OptimizerSpec("riemannian_amsgrad", RiemannianAMSGrad,
                  "Riemannian AMSGrad (RAMSGRAD): RADAM with the running maximum of the second moment.",
                  recommended={"lr": 2e-3}),
    OptimizerSpec("riemannian_adagrad", RiemannianAdagrad,
                  "Riemannian AdaGrad (RADAGRAD): one accumulator of ||g||_x^2 per manifold point.",
                  recommended={"lr": 1e-2}),
):  # fmt: skip
    register(_spec)


# Methods of 2024-2025 that keep less state than AdamW or use it better (docs/benchmarks.md compares their state
# bytes). Learning rates: starting points that lower the loss of the harness's tiny preset, not tuned.
from memopt.optim.adam_mini import AdamMini, adam_mini_blocks  # noqa: E402
from memopt.optim.apollo import Apollo, ApolloMini  # noqa: E402
from memopt.optim.galore import GaLoreAdamW  # noqa: E402
from memopt.optim.muon import Muon  # noqa: E402

_APOLLO_KEYS = ("rank", "scale_type", "scale", "update_proj_gap", "proj_schedule", "proj_seed", "norm_growth_limit")


for _spec in (
    OptimizerSpec("muon", Muon,
                  "Muon (Newton-Schulz orthogonalized momentum) on hidden nn.Linear weights, AdamW on the rest.",
                  split="linear", split_kind="hidden_linear_weight", plain_group={"use_muon": False},
                  recommended={"lr": 2e-3, "weight_decay": 0.0}),
    OptimizerSpec("galore", GaLoreAdamW,
                  "GaLore-AdamW: both moments in a rank-r SVD projection of hidden nn.Linear gradients, AdamW "
                  "on the rest.",
                  split="linear", split_kind="hidden_linear_weight",
                  compressed_only=("rank", "update_proj_gap", "scale", "proj_type", "proj_seed", "proj_schedule"),
                  plain_group={"rank": None}, recommended={"lr": 1e-2}),
    OptimizerSpec("adam_mini", AdamMini,
                  "Adam-mini: one second moment per attention head (q, k), output neuron, token row or norm.",
                  split="structure", param_settings=adam_mini_blocks, recommended={"lr": 2e-3}),
    OptimizerSpec("apollo", Apollo,
                  "APOLLO: the gradient scaled per channel by AdamW moments of a rank-r random projection (hidden "
                  "nn.Linear weights); AdamW on the rest.",
                  split="linear", split_kind="hidden_linear_weight", compressed_only=_APOLLO_KEYS,
                  plain_group={"rank": None}, recommended={"lr": 1e-2}),
    OptimizerSpec("apollo_mini", ApolloMini,
                  "APOLLO-Mini: one scaling factor per hidden matrix from rank-1 random-projection AdamW moments "
                  "(SGD-like memory); AdamW on the rest.",
                  split="linear", split_kind="hidden_linear_weight", compressed_only=_APOLLO_KEYS,
                  plain_group={"rank": None}, recommended={"lr": 2e-2}),
):  # fmt: skip
    register(_spec)


# PSGD (memopt.curvature, Li arXiv 1512.04202; Pooladzandi & Li arXiv 2402.04553): whitening preconditioners fitted
# from the gradient and random vectors, so no closure (preconditioner_type="newton" needs step(closure) with
# backward(create_graph=True), which the harness does not do). max_skew=10 (psgd-torch's preconditioner_max_skew)
# gives a dimension more than 10x the other a diagonal factor, e.g. the embedding's vocabulary (memory bound).
# Learning rates: starting points that lower the tiny preset's loss (tests/harness/train), not tuned at scale.
from memopt.curvature import PSGDLRA, PSGDDiag, PSGDKron  # noqa: E402

for _spec in (
    OptimizerSpec("psgd_kron", PSGDKron,
                  "PSGD-Kron: Kronecker-factored whitening preconditioner (a triangular or diagonal factor per dim).",
                  recommended={"lr": 3e-3, "max_skew": 10.0, "precond_init_scale": None}),
    OptimizerSpec("psgd_lra", PSGDLRA,
                  "PSGD-LRA: low-rank-plus-diagonal whitening preconditioner Q = (I + UV^T) diag(d) per tensor.",
                  recommended={"lr": 3e-3, "rank": 4, "precond_init_scale": None}),
    OptimizerSpec("psgd_diag", PSGDDiag, "PSGD with a diagonal whitening preconditioner (1 float/param + momentum).",
                  recommended={"lr": 3e-3, "precond_init_scale": None}),
):  # fmt: skip
    register(_spec)
