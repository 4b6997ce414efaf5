"""Training harness: LLaMA-style model presets, data and tokenizer, the training loop and checkpoints.

The entry points are :func:`memopt.harness.train.loop.train` with a :class:`memopt.harness.train.config.TrainConfig`
(``memopt train`` on the command line) and :mod:`memopt.harness.bench.compare` (``memopt compare``).
"""

from memopt.harness.train.config import RECIPES, TrainConfig, make_config
from memopt.harness.train.errors import CheckpointError, ConfigError, DataError, HarnessError, NonFiniteLossError
from memopt.harness.train.loop import Trainer, TrainResult, train
from memopt.harness.train.models import PRESETS

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
