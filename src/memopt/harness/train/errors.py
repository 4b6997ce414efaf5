"""Errors raised by the training harness.

Every message names the flag, file or value at fault and says how to fix it. The command line prints
:class:`HarnessError` messages without a traceback.
"""

from __future__ import annotations


def reason(exc: BaseException) -> str:
    """An exception's message for the middle of a sentence: stripped, without its own final full stops."""
    return str(exc).strip().rstrip(".")


def sentence(message: str) -> str:
    """``message`` ending in exactly one full stop (messages built from parts may end in none or two)."""
    return message.rstrip().rstrip(".") + "."


class HarnessError(Exception):
    """Base class of the harness's user-facing errors (bad input, not bugs)."""


class DataError(HarnessError):
    """The training text is missing, empty, unreadable or too small."""


class ConfigError(HarnessError):
    """A flag or configuration value is invalid (unknown preset or optimizer, bad number, ...)."""


class CheckpointError(HarnessError):
    """A checkpoint is missing, unreadable, or belongs to another configuration."""


class NonFiniteLossError(HarnessError):
    """Training produced a NaN or infinite loss or gradient; the run stopped before updating the model."""
