"""The checkpoint of a run, in either of its two formats, behind one interface.

A run in one process writes ``checkpoint.pt`` (one ``torch.save`` file, :mod:`memopt.harness.train.checkpoint`);
a run on several processes writes a ``torch.distributed.checkpoint`` folder committed by
``checkpoint-dcp.json`` (:mod:`memopt.harness.train.sharded_checkpoint`). Both are written atomically, and
saving one format discards the other, so the run folder holds one latest checkpoint. :meth:`RunCheckpoint.load`
resumes from whichever is newer on any number of processes: a ``checkpoint.pt`` resumed by several
processes is first converted on rank 0, a DCP checkpoint loads in one process too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memopt.harness.train import checkpoint as single_file
from memopt.harness.train import sharded_checkpoint as sharded
from memopt.harness.train.distributed import Processes
from memopt.harness.train.errors import CheckpointError


@dataclass
class TrainingState:
    """What a checkpoint restores besides the run's position: the model, its optimizer and LR scheduler."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any


class RunCheckpoint:
    """Saves and loads the checkpoint of the run in ``out``.

    Args:
        out: the run folder.
        processes: the run's processes; one writes ``checkpoint.pt``, several the DCP format.
        trust: allow full unpickling of ``checkpoint.pt`` (``--trust-checkpoint``; only for files you wrote).
        settings_file: where the run's settings are saved, named when a checkpoint belongs to others.
    """

    #: the files that mark a folder as holding a checkpoint
    FILE_NAMES = (single_file.CHECKPOINT_NAME, sharded.POINTER_NAME)

    def __init__(self, out: Path, processes: Processes, *, trust: bool, settings_file: Path):
        self.out = out
        self.processes = processes
        self.trust = trust
        self.settings_file = settings_file
        #: the step of the checkpoint this run last saved or resumed from (None before either)
        self.saved_step: int | None = None

    @property
    def sharded(self) -> bool:
        """Whether this run writes the DCP format (several processes) rather than ``checkpoint.pt``."""
        return self.processes.world_size > 1

    def save(self, state: TrainingState, position: dict[str, Any]) -> None:
        """Write ``state`` and ``position`` (identity, step, tokens, microbatch) as the run's latest checkpoint
        (every rank calls this)."""
        if self.sharded:
            payload = sharded.training_state(state.model, state.optimizer, state.scheduler, position)
            sharded.save(self.out, int(position["step"]), payload, is_main=self.processes.is_main)
        else:
            self._save_file(state, position)
        self.saved_step = int(position["step"])

    def load(
        self,
        state: TrainingState,
        position: dict[str, Any],
        identity: dict[str, Any],
        unsharded: Callable[[], TrainingState],
    ) -> dict[str, Any]:
        """Restore ``state`` from the run's newest checkpoint and return the position it was saved at.

        Args:
            state: the run's model, optimizer and scheduler, filled in place.
            position: the run's current position (the structure the saved one is read into).
            identity: what must match (:meth:`memopt.harness.train.loop.Trainer.identity`).
            unsharded: builds a single-process model, optimizer and scheduler of the run, to convert a
                ``checkpoint.pt`` for several processes.

        Raises:
            CheckpointError: no checkpoint, an unreadable one, or one of another configuration.
        """
        newest_is_sharded = sharded.latest_is_distributed(self.out)
        if not newest_is_sharded and not self.sharded:
            position = self._load_file(state, identity)
            self.saved_step = int(position["step"])
            return position
        if not newest_is_sharded:  # checkpoint.pt resumed on several processes: rank 0 converts it first
            self.processes.on_main(lambda: self._convert(unsharded(), identity))
        no_dist = not self.sharded
        meta = sharded.load(self.out, {"meta": dict(position)}, no_dist=no_dist)["meta"]
        self._check_identity(meta["identity"], self.out / sharded.POINTER_NAME, identity)
        state.optimizer.prepare_state()  # the template that the checkpoint is loaded into
        template = sharded.training_state(state.model, state.optimizer, state.scheduler, meta)
        loaded = sharded.load(self.out, template, no_dist=no_dist)
        sharded.restore(state.model, state.optimizer, state.scheduler, loaded)
        self.saved_step = int(loaded["meta"]["step"])
        return loaded["meta"]

    def last_good(self) -> str:
        """A sentence naming the checkpoint a failed run leaves intact."""
        path = self.out / (
            sharded.POINTER_NAME if sharded.latest_is_distributed(self.out) else single_file.CHECKPOINT_NAME
        )
        if path.exists():
            at = f" (step {self.saved_step})" if self.saved_step is not None else ""
            return f"The last good checkpoint, {path}{at}, is intact."
        return "No checkpoint had been written yet."

    # ------------------------------------------------------------------ checkpoint.pt

    def _save_file(self, state: TrainingState, position: dict[str, Any]) -> None:
        single_file.save_checkpoint(
            self.out / single_file.CHECKPOINT_NAME,
            {
                **position,
                "model": state.model.state_dict(),
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
                "rng": single_file.rng_state(),
            },
        )
        sharded.discard(self.out)  # checkpoint.pt is the run's latest now

    def _load_file(self, state: TrainingState, identity: dict[str, Any]) -> dict[str, Any]:
        """Load ``checkpoint.pt`` into ``state`` and the RNG; its position."""
        path = self.out / single_file.CHECKPOINT_NAME
        payload = single_file.load_checkpoint(path, trust=self.trust)
        self._check_identity(payload["identity"], path, identity)
        state.model.load_state_dict(payload["model"])
        state.optimizer.load_state_dict(payload["optimizer"])
        state.scheduler.load_state_dict(payload["scheduler"])
        single_file.set_rng_state(payload["rng"])
        return {k: payload[k] for k in ("identity", "step", "tokens", "microbatch")}

    def _convert(self, state: TrainingState, identity: dict[str, Any]) -> None:
        """Rewrite ``checkpoint.pt`` as a DCP checkpoint, in this process alone."""
        meta = self._load_file(state, identity)
        payload = sharded.training_state(state.model, state.optimizer, state.scheduler, meta)
        sharded.save(self.out, int(meta["step"]), payload, is_main=True, no_dist=True)

    def _check_identity(self, saved: str, path: Path, identity: dict[str, Any]) -> None:
        differences = single_file.identity_diff(json.loads(saved), identity)
        if differences:
            raise CheckpointError(
                f"--resume: {path} was made by another configuration:\n  "
                + "\n  ".join(differences)
                + f"\nRerun with the original settings (saved in {self.settings_file}), or start a new "
                "run with another --out; the checkpoint was not changed."
            )
