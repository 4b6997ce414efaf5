"""``memopt train --offload cpu|disk``: the same run as without offloading, bit for bit (CPU, fp32), with
gradient accumulation and the default clipping; resume may switch offloading on or off."""

from __future__ import annotations

import os

import pytest
import torch

from memopt.harness.cli import build_parser
from memopt.harness.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from memopt.harness.train.errors import ConfigError
from memopt.harness.train.loop import train
from memopt.harness.train.metrics import METRICS_NAME, read_metrics, without_timing


def _same_run(a, b) -> None:
    pa = load_checkpoint(os.path.join(a.out, CHECKPOINT_NAME))["model"]
    pb = load_checkpoint(os.path.join(b.out, CHECKPOINT_NAME))["model"]
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    ma = without_timing(read_metrics(os.path.join(a.out, METRICS_NAME)))
    mb = without_timing(read_metrics(os.path.join(b.out, METRICS_NAME)))
    assert ma == mb


@pytest.mark.parametrize("tier", ["cpu", "disk"])
def test_offloaded_training_equals_plain_training(tiny, tier):
    settings = {"optimizer": "adamw8bit", "grad_accum": 2, "max_steps": 6, "eval_every": 3}
    plain = train(tiny(out="plain", **settings))
    offloaded = train(tiny(out=tier, offload=tier, **settings))
    _same_run(plain, offloaded)
    if tier == "disk":  # the state files live in the run folder by default, removed when the run ends
        assert os.path.isdir(os.path.join(offloaded.out, "optimizer-state"))


def test_resume_switches_offloading(tiny, tmp_path):
    settings = {"optimizer": "adamw_snsm", "grad_accum": 2, "max_steps": 8, "schedule_steps": 8}
    straight = train(tiny(out="straight", **settings))
    first = train(tiny(out="split", offload="disk", offload_path=str(tmp_path), **{**settings, "max_steps": 4}))
    assert first.steps == 4
    resumed = train(tiny(out="split", resume=True, **settings))
    _same_run(straight, resumed)


def test_offload_flags_and_their_errors(tiny):
    args = build_parser()[0].parse_args(["train", "--offload", "disk", "--offload-path", "/tmp/state"])
    assert (args.offload, args.offload_path) == ("disk", "/tmp/state")
    with pytest.raises(ConfigError, match=r"--offload-path /tmp: only with --offload disk"):
        tiny(offload_path="/tmp").validate()
    with pytest.raises(ConfigError, match="--offload cpu with --param-dtype bf16-sr"):
        tiny(offload="cpu", param_dtype="bf16-sr").validate()
    with pytest.raises(ConfigError, match="adafactor: offload works with optimizers of the memopt engine"):
        train(tiny(offload="cpu", optimizer="adafactor"))
