"""The conformance table: one row per registry optimizer, with what it supports.

In the spirit of ``torch.testing._internal.common_optimizers.OptimizerInfo``: ``tests/optim/test_conformance.py``
runs every contract of ``torch.optim.Optimizer`` (parameter groups, LR schedulers and momentum cycling,
``load_state_dict`` and step hooks, deepcopy/pickle, ``grad=None``, ``zero_grad``, ``maximize``, dtypes, 0-d to
4-d and non-contiguous parameters, named and unnamed state dicts, complex parameters, the fast path against the
reference path, ``torch.compile``) over every row, and fails if a registry name has no row.

**Adding an optimizer** is one row in :data:`OPTIMIZER_DB`: ``OptimizerInfo("name", lr=...)`` plus the
fields where it differs from the defaults below (does it need ``step(closure)``? take one group only? cycle
``momentum`` or ``betas``? lack ``maximize`` or ``foreach``? dispatch to a fused kernel?). ``lr`` is a step
size that moves the test's tiny tensors visibly (also in bfloat16) and stays stable for a few steps;
``kwargs`` are further ``build_optimizer`` hyperparameters for the tiny model (e.g. a small ``rank``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class OptimizerInfo:
    """What a registry optimizer supports, for the generic contracts of ``test_conformance.py``."""

    #: its registry name (``memopt.list_optimizers()``)
    name: str
    #: a step size for the tests' tiny model
    lr: float
    #: further ``build_optimizer`` hyperparameters for the tiny model
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: ``step(closure)`` is required (``optimizer.needs_closure``)
    needs_closure: bool = False
    #: a single parameter group by design: ``add_param_group`` refuses a second one, saying why
    one_group: bool = False
    #: takes ``maximize=True``
    maximize: bool = True
    #: what ``OneCycleLR`` / ``CyclicLR`` with ``cycle_momentum=True`` cycle: ``"momentum"``, ``"betas"``
    #: (``betas[0]``), or None: like ``torch.optim.Adagrad``, the optimizer has no momentum and they refuse it
    cycles: str | None = None
    #: takes ``foreach=False`` (the per-tensor reference path), which must match its fast path
    foreach: bool = True
    #: routes some parameters to torch's fused Adam kernel or memopt's 8-bit C kernel (neither traceable)
    fused: bool = False
    #: parameter dtypes it updates
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16)
    #: updates complex parameters (memopt optimizers refuse them with a ValueError naming the parameter)
    complex: bool = False
    #: updates FSDP2-sharded parameters (then it has a row in tests/distributed/sharded_runs.py CONFIGS)
    sharding: bool = True
    #: what a learning rate of 0 (a scheduler may reach it) does: ``"freezes"`` every parameter; ``"moves"``:
    #: the method's extrapolation still moves them (ASGD's two iterates mix); ``"refused"``: a ValueError naming
    #: ``lr`` (quasar AGD, whose lr is 1/L)
    zero_lr: str = "freezes"
    #: a parameter whose ``.grad`` is None: ``"skipped"`` (no state, not moved), or ``"zero"``: treated as a zero
    #: gradient (not moved, but it has state: quasar AGD's line search moves the whole model along one line)
    grad_none: str = "skipped"
    #: ``torch.compile`` of its step is tested for every row under ``-m slow`` (inductor, tens of CPU-seconds
    #: each on 2 cores); ``"default"`` adds a one-step test in the default suite with the ``aot_eager`` backend,
    #: which traces and functionalizes as inductor does without compiling C++ (adamw8bit: it reaches both
    #: untraceable dispatches, the 8-bit C kernel and torch's fused Adam)
    compile: str = "slow"


_SM = {"rank": 2, "update_proj_gap": 2}
_STORM = {"per_coordinate": True, "ema": True, "bias_correction": True}

OPTIMIZER_DB: tuple[OptimizerInfo, ...] = (
    OptimizerInfo("sgd", lr=0.05, kwargs={"momentum": 0.9}, cycles="momentum"),
    OptimizerInfo("adagrad", lr=0.05),
    OptimizerInfo("rmsprop", lr=0.01, cycles="momentum"),
    OptimizerInfo("adam", lr=0.02, cycles="betas", fused=True),
    OptimizerInfo("adamw", lr=0.02, kwargs={"weight_decay": 0.1}, cycles="betas", fused=True),
    OptimizerInfo("adamw_sn", lr=0.02, cycles="betas", fused=True),
    OptimizerInfo("adamw_snsm", lr=0.02, kwargs=_SM, cycles="betas", fused=True),
    OptimizerInfo("adagrad_sn", lr=0.05, cycles="betas"),
    OptimizerInfo("adagrad_snsm", lr=0.05, kwargs=_SM, cycles="betas"),
    OptimizerInfo("rmsprop_sn", lr=0.01, cycles="betas"),
    OptimizerInfo("adamw8bit", lr=0.02, cycles="betas", fused=True, compile="default"),
    OptimizerInfo("adamw_snsm8bit", lr=0.02, kwargs=_SM, cycles="betas", fused=True),
    OptimizerInfo("adagrad_norm", lr=0.2, cycles="betas"),
    OptimizerInfo("lion", lr=0.01, cycles="betas"),
    OptimizerInfo("adafactor", lr=0.02, kwargs={"relative_step": False, "scale_parameter": False}, foreach=False),
    OptimizerInfo("et_adagrad", lr=0.1),
    OptimizerInfo("et_adam", lr=0.05, cycles="betas"),
    OptimizerInfo("nag_gs", lr=0.1, foreach=False),
    # betas are the EMA factors of STORM's accumulators (betas[0]: S_a), which is what a cycling scheduler moves
    OptimizerInfo("meta_storm", lr=0.01, kwargs=_STORM, needs_closure=True, maximize=False, cycles="betas",
                  foreach=False),
    OptimizerInfo("storm_plus", lr=0.01, kwargs=_STORM, needs_closure=True, maximize=False, cycles="betas",
                  foreach=False),
    OptimizerInfo("quasar_agd", lr=0.05, kwargs={"gamma": 0.5}, needs_closure=True, one_group=True, maximize=False,
                  foreach=False, zero_lr="refused", grad_none="zero"),
    OptimizerInfo("nesterov_agd", lr=0.05, needs_closure=True, one_group=True, maximize=False, foreach=False,
                  zero_lr="refused", grad_none="zero"),
    OptimizerInfo("asgd", lr=0.01, maximize=False, foreach=False, zero_lr="moves"),
    OptimizerInfo("riemannian_sgd", lr=0.05, kwargs={"momentum": 0.9}, maximize=False, cycles="momentum",
                  foreach=False),
    OptimizerInfo("riemannian_adam", lr=0.02, maximize=False, cycles="betas", foreach=False),
    OptimizerInfo("riemannian_amsgrad", lr=0.02, maximize=False, cycles="betas", foreach=False),
    OptimizerInfo("riemannian_adagrad", lr=0.05, maximize=False, foreach=False),
    # the Muon recipe: hidden matrices by Muon (momentum), the rest by AdamW (betas), which schedulers cycle
    OptimizerInfo("muon", lr=0.02, maximize=False, cycles="betas", foreach=False),
    OptimizerInfo("galore", lr=0.02, kwargs=_SM, maximize=False, cycles="betas", foreach=False),
    OptimizerInfo("adam_mini", lr=0.02, maximize=False, cycles="betas", foreach=False),
    OptimizerInfo("apollo", lr=0.02, kwargs=_SM, maximize=False, cycles="betas", foreach=False),
    OptimizerInfo("apollo_mini", lr=0.02, kwargs={"update_proj_gap": 2}, maximize=False, cycles="betas",
                  foreach=False),
    # PSGD's momentum is b1, a name no torch scheduler cycles; FSDP2 shards are refused (the fit needs the
    # whole gradient)
    OptimizerInfo("psgd_kron", lr=0.01, maximize=False, foreach=False, sharding=False),
    OptimizerInfo("psgd_lra", lr=0.01, maximize=False, foreach=False, sharding=False),
    OptimizerInfo("psgd_diag", lr=0.01, maximize=False, foreach=False, sharding=False),
)  # fmt: skip

ROWS: dict[str, OptimizerInfo] = {info.name: info for info in OPTIMIZER_DB}
