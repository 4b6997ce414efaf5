"""The run folder (``--out``): is it usable, does it hold a run, and what a new start may remove from it.

A run folder holds the files a run writes (:data:`RUN_FILES` and the DCP checkpoint folder) and nothing is
ever deleted from it without the user asking, with two exceptions that hold no data: the temporary files of
an atomic write that a killed process left behind (``.checkpoint.pt.<random>.tmp``, see
:func:`memopt.harness.train.checkpoint.atomic_write_bytes`), removed at the next start, and the run's own
files when the user asks for a new start with ``--restart``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from memopt.harness.train import checkpoint, sharded_checkpoint
from memopt.harness.train.errors import ConfigError
from memopt.harness.train.metrics import METRICS_NAME

CONFIG_NAME = "config.json"
RESULT_NAME = "result.json"
#: the files of a run (checkpoints first)
RUN_FILES = (checkpoint.CHECKPOINT_NAME, sharded_checkpoint.POINTER_NAME, METRICS_NAME, CONFIG_NAME, RESULT_NAME)
#: the files whose presence means that the run can be resumed
CHECKPOINT_FILES = (checkpoint.CHECKPOINT_NAME, sharded_checkpoint.POINTER_NAME)


def check_out(out: str | Path, flag: str = "--out", *, create: bool = False) -> Path:
    """Make sure ``out`` is, or can become, a writable folder; return it (created with ``create``).

    Raises:
        ConfigError: one line naming ``flag`` when ``out`` is a file, lies under a file, or sits in a folder
            that this process cannot write.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: this is a file, not a folder; choose a folder for the run.")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{flag} {path}: {existing} is a file, so no folder can be made under it; choose another {flag}."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "this folder" if existing == path else f"the folder {existing}"
        raise ConfigError(f"{flag} {path}: {where} is not writable; choose another {flag} or fix its permissions.")
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{flag} {path}: cannot create the folder ({exc.strerror or exc}); choose another {flag}."
        ) from exc
    return path


def run_files(out: Path) -> list[str]:
    """The names of the run files present in ``out`` (see :data:`RUN_FILES`)."""
    return [name for name in RUN_FILES if (out / name).exists()]


def has_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a checkpoint a run can resume from."""
    return any((out / name).exists() for name in CHECKPOINT_FILES)


def stale_temporaries(out: Path) -> list[Path]:
    """Temporary files of atomic writes to the run's files (``.<name>.<random>.tmp``) left by a killed process."""
    if not out.is_dir():
        return []
    return sorted(p for name in RUN_FILES for p in out.glob(f".{name}.*.tmp") if p.is_file())


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete :func:`stale_temporaries` (at the start of a run, before anything writes); the ones removed."""
    stale = stale_temporaries(out)
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_start(out: Path, *, resume: bool, restart: bool) -> None:
    """Refuse a start that would mix with the run already in ``out``, with the flag that fixes it.

    * a new run (neither flag) needs a folder without run files;
    * ``--resume`` needs a checkpoint; a run that stopped before its first one is named as such;
    * ``--restart`` and ``--resume`` exclude each other.

    Raises:
        ConfigError: naming the folder, what it holds and the flag to use.
    """
    if resume and restart:
        raise ConfigError("--resume and --restart: choose one (continue the run in --out, or start it again).")
    present = run_files(out)
    if resume:
        if not has_checkpoint(out) and present:
            raise ConfigError(
                f"--resume: the run in {out} stopped before its first checkpoint (it holds {', '.join(present)}), "
                "so there is nothing to continue. Start it again with --restart instead of --resume (this removes "
                "those files), or choose another --out."
            )
        return
    if present and not restart:
        hint = (
            "Continue it with --resume"
            if has_checkpoint(out)
            else "It stopped before its first checkpoint; start it again with --restart (this removes those files)"
        )
        raise ConfigError(
            f"--out {out}: the folder already holds a run ({', '.join(present)}). {hint}, or choose another --out; "
            "nothing was changed."
        )


def clear_run(out: Path) -> list[str]:
    """``--restart``: remove the run files of ``out`` (and the DCP checkpoint folder); the names removed.
    Other files in the folder are left alone."""
    removed = run_files(out)
    for name in removed:
        (out / name).unlink()
    folder = out / sharded_checkpoint.FOLDER_NAME
    if folder.is_dir():
        shutil.rmtree(folder)
        removed.append(sharded_checkpoint.FOLDER_NAME + "/")
    return removed
