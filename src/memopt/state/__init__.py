"""Optimizer state as data: how each state tensor is stored (full precision, bfloat16 with stochastic
rounding, block-wise 8-bit), how it is laid out on FSDP2 shards, and how many bytes it holds.

The bottom layer of the library: it imports nothing from memopt but :mod:`memopt.validation`.
"""
