"""Optimizers by name: the registry (:mod:`.specs`), how a model's parameters are split between
optimizers, and state-memory reports of registry optimizers (:mod:`.reports`)."""
