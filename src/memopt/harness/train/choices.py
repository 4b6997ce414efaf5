"""The fixed choices of the harness's flags, declared once, and the one check that rejects a value with the
closest valid ones ("did you mean").

Lists owned by a module that uses them stay there (``schedule.SCHEDULES``, ``tokenizer.KINDS``,
``models.PRESETS``); every check of a choice, theirs included, goes through :func:`check_choice`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from memopt.harness.train.errors import ConfigError

#: ``--dtype``: bf16 autocast, plain fp32, or ``auto`` (bf16 on a GPU that supports it)
DTYPES = ("auto", "fp32", "bf16")
#: ``--precision`` of the memory planner (:mod:`memopt.harness.memory.techniques`)
PRECISIONS = ("fp32", "bf16-autocast", "bf16", "bf16-sr", "bf16-master")
#: ``--param-dtype`` of the harness: the precisions that change how parameters are held
PARAM_DTYPES = tuple(p for p in PRECISIONS if p != "bf16-autocast")
#: ``--sparse-storage``: nonzeros and their positions, or ``torch.nn.utils.prune``'s weight and mask
SPARSE_STORAGES = ("compact", "mask")
#: ``--parallel`` under torchrun: FSDP2 shards, DDP replicates
PARALLEL = ("fsdp", "ddp")


def closest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" (did you mean 'a', 'b'?)"`` for the closest choices to ``name``, or ``""`` if none.

    Args:
        name: the value the user gave.
        choices: the valid values.
        n: at most this many suggestions.
    """
    matches = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=0.5)
    if not matches:
        return ""
    return " (did you mean " + ", ".join(repr(m) for m in matches) + "?)"


def listing(choices: Sequence[str]) -> str:
    """``"a or b"``, ``"a, b or c"``, and ``"one of a, b, c or d"`` for longer lists."""
    names = [str(c) for c in choices]
    text = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return text if len(names) <= 3 else f"one of {text}"


def check_choice(flag: str, value: str, choices: Sequence[str], *, unknown: str | None = None, hint: str = "") -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``.

    The message names the flag, the value, the choices and the closest of them:
    ``--dtype 'bf61': choose auto, fp32 or bf16 (did you mean 'bf16'?).``, or with ``unknown="schedule"``
    ``--schedule 'cosin': unknown schedule (did you mean 'cosine'?); choose cosine, sgdr or constant.``

    Args:
        flag: the flag that set the value, e.g. ``"--dtype"``.
        value: what was given.
        choices: the valid values.
        unknown: what kind of name it is, for open-ended lists (presets, schedules, tokenizers).
        hint: more advice after the choices, e.g. ``", or give a config file with --model-config PATH"``.
    """
    if value in choices:
        return
    if unknown:
        text = f"unknown {unknown}{closest(value, choices)}; choose {listing(choices)}"
    else:
        text = f"choose {listing(choices)}{closest(value, choices)}"
    raise ConfigError(f"{flag} {value!r}: {text}{hint}.")
