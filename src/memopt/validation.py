"""Hyperparameter validators shared by every memopt optimizer.

Each validator raises ``ValueError`` whose message names the hyperparameter, the value received, the
accepted range and how to fix it, so that a wrong configuration fails at construction time, before any
state exists that could be lost.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any

_LIBRARY = os.path.dirname(os.path.abspath(__file__)) + os.sep
_HARNESS = _LIBRARY + "harness" + os.sep


def _internal(filename: str) -> bool:
    """Whether a frame's file belongs to memopt's library (not its harness) or to torch."""
    filename = os.path.abspath(filename)
    if filename.startswith(_LIBRARY):
        return not filename.startswith(_HARNESS)
    torch = sys.modules.get("torch")
    torch_dir = os.path.dirname(getattr(torch, "__file__", None) or "") + os.sep
    return torch_dir != os.sep and filename.startswith(torch_dir)


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the user's line: the first frame outside memopt's library and torch
    (an optimizer built through ``torch.optim.Optimizer.__init__`` would otherwise point into torch)."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and _internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def name_list(names: list[str], limit: int = 6) -> str:
    """``a, b, c`` (at most ``limit`` names, then ``and N more``)."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_non_negative(name: str, value: Any) -> None:
    """``value`` must be a finite number >= 0."""
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid {name}: {value!r}. {name} must be a finite number >= 0.")


def check_positive(name: str, value: Any) -> None:
    """``value`` must be a finite number > 0."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Invalid {name}: {value!r}. {name} must be a finite number > 0.")


def check_positive_int(name: str, value: Any) -> None:
    """``value`` must be an int >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r}. {name} must be an integer >= 1.")


def check_bool(name: str, value: Any) -> None:
    """``value`` must be True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {name}: {value!r}. {name} must be True or False.")


def check_fraction(name: str, value: Any, *, allow_one: bool) -> None:
    """``value`` must lie in [0, 1) or, with ``allow_one``, in [0, 1]."""
    upper_ok = value <= 1 if allow_one else value < 1
    if not _is_number(value) or not (0 <= value and upper_ok):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"Invalid {name}: {value!r}. {name} must lie in {interval}.")


def check_betas(betas: Any, *, allow_beta2_one: bool = True) -> None:
    """``betas = (beta1, beta2)`` with beta1 in [0, 1) and beta2 in [0, 1] (1 means AdaGrad summation)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r}. betas must be a pair (beta1, beta2), e.g. (0.9, 0.999).")
    check_fraction("betas[0] (beta1)", betas[0], allow_one=False)
    check_fraction("betas[1] (beta2)", betas[1], allow_one=allow_beta2_one)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` must be one of ``choices``; the message suggests the closest one."""
    choices = list(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Invalid {name}: {value!r}. Choose one of {choices}.{hint}")


def closest_names_hint(name: str, known: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix listing the known names closest to ``name`` (empty if none)."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
