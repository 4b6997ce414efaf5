"""Wrappers around any optimizer: the Grokfast gradient filter, float32 master weights for 16-bit
parameters, and TrAct's first-layer weight gradient."""

from memopt.wrappers.grokfast import Grokfast
from memopt.wrappers.master_weights import MasterWeightOptimizer, master_copy
from memopt.wrappers.tract import TrActConv2d, TrActLinear, tract

__all__ = ["Grokfast", "MasterWeightOptimizer", "TrActConv2d", "TrActLinear", "master_copy", "tract"]
