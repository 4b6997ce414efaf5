"""The harness: everything that *uses* the library to train, measure and compare.

The command line (:mod:`.cli`), data and tokenizers, models, the training loop and its checkpoints, the
distributed context (:mod:`.train`); the memory profiler and planner (:mod:`.memory`); benchmarks
(:mod:`.bench`); research problems and experiment drivers (:mod:`.problems`, :mod:`.experiments`).

Imports flow one way: the harness imports the library's modules directly (never the ``memopt`` facade),
and nothing in the library imports the harness (``tests/test_layering.py``).
"""
