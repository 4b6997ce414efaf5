"""memopt: memory-efficient and accelerated first-order optimizers for PyTorch.

Optimizers are ``torch.optim.Optimizer`` subclasses built on one engine (:mod:`memopt.optim.engine`);
``build_optimizer`` builds any of them by registry name, ``list_optimizers`` lists the names, and
``state_bytes`` counts the exact bytes an optimizer's state holds; ``offload`` builds one whose state lives in
host memory or on disk, stepped from gradient hooks.
"""

from memopt.accelerated import (
    ASGD,
    NAGGS,
    FourParameterASGD,
    MetaSTORM,
    NesterovAGD,
    QuasarAGD,
    STORMPlus,
    effective_lr,
    naggs_optimal_step,
)
from memopt.curvature import PSGDLRA, PSGDDiag, PSGDKron
from memopt.manifolds import ManifoldParameter
from memopt.offload import offload
from memopt.optim.adafactor import Adafactor
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
)
from memopt.optim.tensoring import ETAdaGrad, ETAdam
from memopt.registry.reports import format_state_report, state_memory_report
from memopt.registry.specs import build_optimizer, list_optimizers, recommended_hparams
from memopt.riemannian import RiemannianAdagrad, RiemannianAdam, RiemannianAMSGrad, RiemannianSGD
from memopt.state.accounting import state_bytes, state_bytes_per_rank
from memopt.wrappers import Grokfast, tract

__version__ = "0.1.0"

__all__ = [
    "ASGD",
    "NAGGS",
    "PSGDLRA",
    "SGD",
    "AdaGradNorm",
    "AdaGradSN",
    "AdaGradSNSM",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "AdamW8bit",
    "AdamWSN",
    "AdamWSNSM",
    "AdamWSNSM8bit",
    "ChainedOptimizer",
    "ETAdaGrad",
    "ETAdam",
    "FourParameterASGD",
    "Grokfast",
    "ManifoldParameter",
    "MemoptOptimizer",
    "MetaSTORM",
    "NesterovAGD",
    "PSGDDiag",
    "PSGDKron",
    "QuasarAGD",
    "RMSPropSN",
    "RMSprop",
    "RiemannianAMSGrad",
    "RiemannianAdagrad",
    "RiemannianAdam",
    "RiemannianSGD",
    "STORMPlus",
    "build_optimizer",
    "effective_lr",
    "format_state_report",
    "list_optimizers",
    "naggs_optimal_step",
    "offload",
    "recommended_hparams",
    "state_bytes",
    "state_bytes_per_rank",
    "state_memory_report",
    "tract",
]
