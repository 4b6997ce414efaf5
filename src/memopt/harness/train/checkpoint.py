"""Checkpoints: model, optimizer, scheduler, RNG and data position, written atomically.

A checkpoint is one ``torch.save`` file. It is written to a temporary file in the same folder, flushed and
fsynced, then renamed over the old one with :func:`os.replace`, so a crash or a failing run never leaves a
half-written or missing checkpoint. Loading uses ``torch.load(..., weights_only=True)``: only tensors and
plain Python containers are unpickled. An optimizer whose state holds other objects needs
``trust=True`` (``--trust-checkpoint``), which unpickles arbitrary objects and must only be used on files
you wrote.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from memopt.harness.train.errors import CheckpointError, reason

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write) -> None:
    """Write ``path`` atomically: ``write(file)`` fills a temporary file in the same folder, then it is
    fsynced and renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and every CUDA device)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically save ``payload`` (model/optimizer/scheduler state dicts, position, identity) to ``path``."""
    payload = {"format": FORMAT, **payload}
    atomic_write_bytes(path, lambda file: torch.save(payload, file))


def load_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` onto the CPU.

    Args:
        path: the checkpoint file.
        trust: allow full unpickling (only for files you wrote) when ``weights_only`` loading fails.

    Raises:
        CheckpointError: the file is missing, unreadable, not a memopt checkpoint, or needs ``trust``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"--resume: no checkpoint at {path}. Point --out at the folder of the run to continue, or leave "
            "out --resume to start a new run."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"--resume: {path} holds objects other than tensors and plain containers (probably optimizer "
            f"state), so it cannot be loaded with weights_only=True ({str(exc).splitlines()[0]}). If you "
            "wrote this file yourself, rerun with --trust-checkpoint."
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(
            f"--resume: cannot read {path}: {reason(exc)}. The file is damaged or not a checkpoint."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"--resume: {path} is not a memopt training checkpoint (format {FORMAT}).")
    return payload


def identity_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two run identities (``key: saved -> current``)."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{key}: checkpoint has {saved.get(key)!r}, this run has {current.get(key)!r}"
        for key in keys
        if saved.get(key) != current.get(key)
    ]
