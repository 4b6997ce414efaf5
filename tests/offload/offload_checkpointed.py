"""A checkpointed training run with disk offload, used by the fault tests (also run as a subprocess).

``python offload_checkpointed.py CHECKPOINT STATE_DIR KILL_AT``: trains the tiny model with ``adamw8bit``
offloaded to ``STATE_DIR``, writes ``CHECKPOINT`` atomically every 5 steps, and sends itself SIGKILL in the
middle of step ``KILL_AT`` (after its first parameter stepped and was handed to the disk writer).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from offload_models import batches, hparams_for, tiny_model, train

from memopt.harness.train.checkpoint import atomic_write_bytes
from memopt.offload import offload

NAME, STEPS, ACCUMULATION, CLIP, EVERY = "adamw8bit", 20, 2, 0.5, 5
DATA = batches(STEPS, ACCUMULATION)


def make(state_dir: Path | None):
    """A fresh model and its optimizer (offloaded to ``state_dir``, or plain in memory when None)."""
    model = tiny_model()
    to = "disk" if state_dir is not None else "cpu"
    optimizer = offload(NAME, model, to, state_dir, max_grad_norm=None, accumulation_steps=ACCUMULATION,
                        **hparams_for(NAME))  # fmt: skip
    return model, optimizer


def saver(checkpoint: Path, model, optimizer):
    """``after_step``: write the checkpoint atomically every :data:`EVERY` steps."""

    def save(step: int) -> None:
        if step % EVERY == 0:
            state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
            atomic_write_bytes(checkpoint, lambda file: torch.save(state, file))

    return save


def resume(checkpoint: Path, state_dir: Path | None):
    """Load the checkpoint into a fresh model and optimizer and train to the end; the model."""
    saved = torch.load(checkpoint, weights_only=True)
    model, optimizer = make(state_dir)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    train(model, optimizer, DATA[saved["step"] :])
    return model, saved["step"]


def main(checkpoint: Path, state_dir: Path, kill_at: int) -> None:
    model, optimizer = make(state_dir)
    save = saver(checkpoint, model, optimizer)
    steps = {"done": 0}

    def counting_save(step: int) -> None:
        steps["done"] = step
        save(step)

    store = optimizer.store
    put = store.put

    def put_then_die(key, tensors):
        put(key, tensors)
        if steps["done"] + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    store.put = put_then_die
    train(model, optimizer, DATA, after_step=counting_save)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
