"""``memopt train`` under ``torchrun --nproc_per_node 2`` on the CPU (gloo), and its checkpoints moving
between 2 processes and 1: torchrun with FSDP2 for 8 steps (each step 2 accumulated microbatches, split
over the ranks, clipped to a global norm), which must match the same 8 steps in one process; resumed in one
process to step 16; resumed under torchrun with DDP to step 24."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.distributed.spawn import free_port

from memopt.harness.train.metrics import METRICS_NAME, read_metrics

pytestmark = pytest.mark.distributed

SRC = str(Path(__file__).resolve().parents[2] / "src")
ARGS = [
    "train", "--preset", "tiny", "--data", "builtin:python-reference", "--optimizer", "adamw_snsm",
    "--vocab-size", "512", "--seq-len", "32",
    "--batch-size", "8", "--grad-accum", "2", "--clip", "0.5", "--eval-every", "8", "--eval-batches", "2",
    "--schedule-steps", "24",
    "--device", "cpu", "--threads", "1", "--quiet",
]  # fmt: skip


def memopt_train(args: list[str], *, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    command = [*launcher, "-m", "memopt.harness.cli"] if processes > 1 else [sys.executable, "-m", "memopt.harness.cli"]
    done = subprocess.run([*command, *ARGS, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_torchrun_trains_and_its_checkpoints_move_between_two_processes_and_one(tmp_path, cache_dir):
    out = tmp_path / "run"
    common = ["--cache-dir", cache_dir, "--out", str(out)]
    first = memopt_train([*common, "--max-steps", "8"], processes=2)
    assert (out / "checkpoint-dcp.json").is_file() and not (out / "checkpoint.pt").exists()
    result = json.loads((out / "result.json").read_text())
    per_rank = result["extra"]["state_bytes_per_rank"]
    assert result["extra"]["world_size"] == 2 and len(per_rank) == 2 and sum(per_rank) == result["state_bytes"]
    assert first.stdout.count("adamw_snsm: 8 steps") == 1  # rank 0 alone reports
    alone = tmp_path / "alone"
    memopt_train(["--cache-dir", cache_dir, "--out", str(alone), "--max-steps", "8"], processes=1)
    fields = ("loss", "grad_norm", "lr", "tokens")
    two, one = (
        [[r[k] for k in fields] for r in read_metrics(folder / METRICS_NAME) if r["event"] == "train"]
        for folder in (out, alone)
    )
    assert len(two) == len(one) == 8
    for a, b in zip(two, one):  # the same tokens, gradient, clipping and update: equal up to rounding
        assert all(abs(x - y) <= 1e-5 * max(abs(y), 1.0) for x, y in zip(a, b)), (a, b)

    memopt_train([*common, "--max-steps", "16", "--resume"], processes=1)  # the DCP checkpoint in one process
    assert (out / "checkpoint.pt").is_file() and not (out / "checkpoint-dcp.json").exists()
    memopt_train([*common, "--max-steps", "24", "--resume", "--parallel", "ddp"], processes=2)

    records = read_metrics(out / METRICS_NAME)
    steps = [r["step"] for r in records if r["event"] == "train"]
    assert steps == list(range(1, 25))  # once each: only rank 0 writes metrics, resumes drop nothing
    assert [r["step"] for r in records if r["event"] == "eval"] == [8, 16, 24]
    losses = [r["loss"] for r in records if r["event"] == "train"]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3, losses
    evals = [r["val_loss"] for r in records if r["event"] == "eval"]
    assert evals[-1] < evals[0]
    final = json.loads((out / "result.json").read_text())
    assert final["steps"] == 24 and final["extra"]["parallel"] == "ddp"
