"""Wrappers around any optimizer: the Grokfast gradient filter and float32 master weights for 16-bit
parameters."""

from memopt.wrappers.grokfast import Grokfast
from memopt.wrappers.master_weights import MasterWeightOptimizer, master_copy

__all__ = ["Grokfast", "MasterWeightOptimizer", "master_copy"]
