"""Distributed checkpoints with ``torch.distributed.checkpoint`` (DCP): each rank writes its shards, and a
checkpoint loads on any number of processes, one included (DCP reshards on load).

Layout in the run folder: ``checkpoint-dcp/step-<N>/`` (DCP's files) and ``checkpoint-dcp.json``, a small
pointer naming the folder of the last complete checkpoint. A checkpoint is committed when the pointer
is replaced atomically (:func:`memopt.harness.train.checkpoint.atomic_write_bytes`), after every rank has
finished writing; older step folders are removed only then, so a crash at any point leaves the previous
checkpoint intact. What is saved: the model and optimizer state (``get_state_dict``: names as keys,
DTensor shards, quantized codes and projector state included), the LR scheduler, the CPU RNG state (the
same on every rank: they are seeded alike) and the run's identity and position.

Loading needs a template of the same structure (DCP fills tensors in place): the optimizer's
``prepare_state()`` creates every state entry before its first step. Which format a run writes, and the
conversion of a single-process ``checkpoint.pt`` for a distributed run, are decided by
:class:`memopt.harness.train.run_checkpoint.RunCheckpoint`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.optim import Optimizer

from memopt.harness.train.checkpoint import CHECKPOINT_NAME, atomic_write_bytes
from memopt.harness.train.errors import CheckpointError, reason

POINTER_NAME = "checkpoint-dcp.json"
FOLDER_NAME = "checkpoint-dcp"
FORMAT = 1


def pointer(out: Path) -> dict[str, Any] | None:
    """The committed DCP checkpoint of the run in ``out`` (None if there is none)."""
    path = out / POINTER_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"--resume: {path} is not a checkpoint pointer ({exc}); the folder is damaged.") from exc
    if record.get("format") != FORMAT or not (out / record.get("path", "")).is_dir():
        raise CheckpointError(
            f"--resume: {path} names {record.get('path')!r}, which is not a checkpoint folder in {out} "
            f"(format {FORMAT}); the run folder is damaged."
        )
    return record


def latest_is_distributed(out: Path) -> bool:
    """Whether the newest checkpoint of the run in ``out`` is a DCP one (else ``checkpoint.pt``)."""
    marker, single = out / POINTER_NAME, out / CHECKPOINT_NAME
    if not marker.is_file():
        return False
    return not single.is_file() or marker.stat().st_mtime_ns >= single.stat().st_mtime_ns


def training_state(model: nn.Module, optimizer: Optimizer, scheduler: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """The state a training checkpoint holds, as DCP saves it (or the template it loads into)."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {
        "model": model_state,
        "optimizer": optimizer_state,
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "meta": dict(meta),
    }


def save(out: Path, step: int, state: dict[str, Any], *, is_main: bool, no_dist: bool = False) -> None:
    """Write ``state`` as the run's checkpoint at ``step`` (every rank calls this; rank 0 commits)."""
    folder = out / FOLDER_NAME / f"step-{step:08d}"
    committed = out / POINTER_NAME
    if committed.is_file() and json.loads(committed.read_text()).get("path") == str(folder.relative_to(out)):
        folder = folder.with_name(folder.name + "-again")  # saving the same step twice: keep the committed one
    if is_main and folder.exists():  # left by a save that crashed before its commit
        shutil.rmtree(folder)
    _barrier(no_dist)
    dcp.save(state, checkpoint_id=str(folder), no_dist=no_dist)
    _barrier(no_dist)
    if is_main:
        record = {"format": FORMAT, "path": str(folder.relative_to(out)), "step": step}
        atomic_write_bytes(out / POINTER_NAME, lambda f: f.write(json.dumps(record).encode()))
        for old in (out / FOLDER_NAME).iterdir():
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        (out / CHECKPOINT_NAME).unlink(missing_ok=True)  # the DCP checkpoint is the run's latest now
    _barrier(no_dist)


def load(out: Path, template: dict[str, Any], *, no_dist: bool = False) -> dict[str, Any]:
    """Fill ``template`` (from :func:`training_state`, after ``optimizer.prepare_state()``) from the run's
    committed checkpoint and return it."""
    record = pointer(out)
    if record is None:
        raise CheckpointError(f"--resume: no distributed checkpoint in {out} ({POINTER_NAME} is missing).")
    try:
        dcp.load(template, checkpoint_id=str(out / record["path"]), no_dist=no_dist)
    except Exception as exc:
        raise CheckpointError(
            f"--resume: cannot load the checkpoint {out / record['path']}: {reason(exc)}. It was made by another model "
            "or optimizer configuration, or is damaged."
        ) from exc
    return template


def restore(model: nn.Module, optimizer: Optimizer, scheduler: Any, state: dict[str, Any]) -> None:
    """Put a loaded :func:`training_state` into the model, optimizer, scheduler and RNG."""
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])


def _barrier(no_dist: bool) -> None:
    if not no_dist and dist.is_initialized():
        dist.barrier()


def discard(out: Path) -> None:
    """Remove the run's DCP checkpoint (once a newer single-process ``checkpoint.pt`` is committed)."""
    (out / POINTER_NAME).unlink(missing_ok=True)
    shutil.rmtree(out / FOLDER_NAME, ignore_errors=True)
