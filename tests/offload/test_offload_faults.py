"""Faults of the disk tier: a disk too small is refused before training; a write error (a full disk) during
a step, and a SIGKILL during a step, both stop the run and leave the last checkpoint loadable, and resuming
from it ends bit for bit where an uninterrupted run ends."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from offload_checkpointed import DATA, NAME, make, resume, saver
from offload_models import hparams_for, tiny_model, train

from memopt.offload import OffloadCapacityError, OffloadError, offload
from memopt.offload import disk as disk_module
from memopt.registry.specs import build_optimizer

HERE = Path(__file__).resolve().parent


def uninterrupted() -> torch.nn.Module:
    model = tiny_model()
    train(model, build_optimizer(model, NAME, **hparams_for(NAME)), DATA)
    return model


def test_a_disk_too_small_is_refused_before_training(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(disk_module.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(OffloadCapacityError, match=rf"needs \d+ bytes .* under {tmp_path}, but only 1000 bytes"):
        offload("adamw", tiny_model(), "disk", tmp_path)


def test_bad_options_are_named(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match=r"Invalid to: 'gpu'. Choose one of"):
        offload("adamw", model, "gpu")
    with pytest.raises(ValueError, match="needs path="):
        offload("adamw", model, "disk")
    with pytest.raises(ValueError, match="is not an existing folder"):
        offload("adamw", model, "disk", tmp_path / "missing")
    with pytest.raises(ValueError, match="not built on the memopt engine"):
        offload("adafactor", model)
    with pytest.raises(ValueError, match="accumulation_steps"):
        offload("adamw", model, accumulation_steps=0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        offload("adamw", model, max_grad_norm=-1.0)


def test_more_backward_passes_than_accumulation_steps_is_an_error():
    model = tiny_model()
    optimizer = offload("adamw", model, accumulation_steps=2)
    x = torch.randn(4, 64)
    for _ in range(2):
        model(x).sum().backward()
    with pytest.raises(ValueError, match=r"parameter '\d\.(weight|bias)' received its gradient 3 times .* step\(\)"):
        model(x).sum().backward()
    optimizer.step()  # the two accumulated passes step; the next cycle is clean
    optimizer.zero_grad()
    for _ in range(2):
        model(x).sum().backward()
    optimizer.step()


def test_a_full_disk_during_a_step_stops_the_run_and_the_checkpoint_resumes(tmp_path, monkeypatch):
    checkpoint, state_dir = tmp_path / "checkpoint.pt", tmp_path / "state"
    state_dir.mkdir()
    model, optimizer = make(state_dir)
    done = {"step": 0}
    save = saver(checkpoint, model, optimizer)

    def after(step: int) -> None:
        done["step"] = step
        save(step)

    real_pwrite = os.pwrite

    def pwrite(fd, data, offset):
        if done["step"] == 12:  # during step 13, after the checkpoint of step 10
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(OffloadError, match=r"failed writing the optimizer state of parameter '\d\.(weight|bias)'.*"
                                           r"No space left on device.*resume from the last checkpoint"):  # fmt: skip
        train(model, optimizer, DATA, after_step=after)
    assert done["step"] == 12
    with pytest.raises(OffloadError):  # the broken optimizer refuses to go on
        optimizer.step()
    monkeypatch.setattr(os, "pwrite", real_pwrite)

    resumed, step = resume(checkpoint, tmp_path)
    assert step == 10
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted().parameters(), resumed.parameters()))


def test_a_sigkill_during_a_step_leaves_the_checkpoint_resumable(tmp_path):
    checkpoint, state_dir = tmp_path / "checkpoint.pt", tmp_path / "state"
    state_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    run = subprocess.run(
        [sys.executable, str(HERE / "offload_checkpointed.py"), str(checkpoint), str(state_dir), "14"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert not list(tmp_path.glob(".checkpoint.pt.*"))  # no temporary left for a reader to mistake
    resumed, step = resume(checkpoint, None)  # and offloading may be switched off across the resume
    assert step == 10
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted().parameters(), resumed.parameters()))
