"""Training harness: LLaMA-style model presets, data and tokenizer, the training loop and checkpoints.

The entry points are :func:`memopt.train.loop.train` with a :class:`memopt.train.config.TrainConfig`
(``memopt train`` on the command line) and :mod:`memopt.bench.compare` (``memopt compare``).
"""

from memopt.train.config import RECIPES, TrainConfig, make_config
from memopt.train.errors import CheckpointError, ConfigError, DataError, HarnessError, NonFiniteLossError
from memopt.train.loop import Trainer, TrainResult, train
from memopt.train.models import PRESETS

__all__ = [
    "PRESETS",
    "RECIPES",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "HarnessError",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "make_config",
    "train",
]
