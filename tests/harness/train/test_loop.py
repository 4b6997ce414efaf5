"""The training loop: every registry optimizer trains, resume is bit-identical, bad runs lose nothing."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import torch

import memopt
from memopt.harness.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from memopt.harness.train.errors import CheckpointError, ConfigError, NonFiniteLossError
from memopt.harness.train.loop import Trainer, train
from memopt.harness.train.metrics import METRICS_NAME, read_metrics, without_timing

ALL_OPTIMIZERS = sorted(memopt.list_optimizers())


def train_losses(out: str) -> list[float]:
    return [r["loss"] for r in read_metrics(os.path.join(out, METRICS_NAME)) if r["event"] == "train"]


@pytest.mark.parametrize("name", ALL_OPTIMIZERS)
def test_loss_falls_for_every_registry_optimizer(tiny, name):
    result = train(tiny(optimizer=name, max_steps=30, eval_every=10, eval_batches=2))
    losses = train_losses(result.out)
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:3]) / 3 - 0.3, losses
    assert result.evals[-1]["val_loss"] < result.evals[0]["val_loss"]


def _parameters(out: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(os.path.join(out, CHECKPOINT_NAME))["model"]


@pytest.mark.parametrize("name", ALL_OPTIMIZERS)
def test_resume_is_bit_identical_on_cpu(tiny, name):
    straight = train(tiny(out="straight", optimizer=name, max_steps=12))
    first = train(tiny(out="split", optimizer=name, max_steps=5, schedule_steps=12))
    assert first.steps == 5
    resumed = train(tiny(out="split", optimizer=name, max_steps=12, resume=True))
    assert resumed.steps == straight.steps == 12 and resumed.tokens == straight.tokens
    a, b = _parameters(straight.out), _parameters(resumed.out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert without_timing(read_metrics(os.path.join(straight.out, METRICS_NAME))) == without_timing(
        read_metrics(os.path.join(resumed.out, METRICS_NAME))
    )
    assert resumed.evals == straight.evals


def test_resume_after_a_crash_drops_metrics_past_the_checkpoint(tiny):
    config = tiny(out="crash", max_steps=8, save_every=4, schedule_steps=8)
    train(config)
    metrics = os.path.join(config.out, METRICS_NAME)
    saved = load_checkpoint(os.path.join(config.out, CHECKPOINT_NAME))
    assert saved["step"] == 8 and saved["tokens"] == 8 * 8 * 32 and saved["microbatch"] == 8
    with open(metrics, "a") as file:  # a line that a killed run wrote after its checkpoint
        file.write(json.dumps({"event": "train", "step": 9, "loss": 1.0}) + "\n")
    train(dataclasses.replace(config, resume=True))
    assert max(r["step"] for r in read_metrics(metrics)) == 8


def test_tokens_are_counted_exactly_with_accumulation_and_token_limit(tiny):
    result = train(tiny(out="accum", grad_accum=3, max_steps=None, max_tokens=5000, eval_every=0))
    per_step = 3 * 8 * 32
    assert result.steps == math.ceil(5000 / per_step) and result.tokens == result.steps * per_step
    assert result.stopped_by == "max_tokens"
    records = read_metrics(os.path.join(result.out, METRICS_NAME))
    assert [r["tokens"] for r in records if r["event"] == "train"] == [per_step * (i + 1) for i in range(result.steps)]
    assert [r["step"] for r in records if r["event"] == "eval"] == [result.steps]


def test_time_limit_stops_early_and_checkpoints(tiny):
    result = train(tiny(out="timed", max_steps=10_000, max_time=1e-9))
    assert result.stopped_by == "max_time" and result.steps == 0
    assert (load_checkpoint(os.path.join(result.out, CHECKPOINT_NAME)))["step"] == 0


def test_activation_checkpointing_and_bf16_train(tiny):
    plain = train(tiny(out="plain", max_steps=3, eval_every=0))
    recomputed = train(tiny(out="ckpt", max_steps=3, eval_every=0, activation_checkpointing=True))
    assert train_losses(recomputed.out) == pytest.approx(train_losses(plain.out), rel=1e-5)
    bf16 = train(tiny(out="bf16", max_steps=3, eval_every=0, dtype="bf16"))
    assert all(math.isfinite(x) for x in train_losses(bf16.out))
    assert train_losses(bf16.out) != train_losses(plain.out)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny):
    config = tiny(out="nan", max_steps=2, schedule_steps=8)
    train(config)
    path = os.path.join(config.out, CHECKPOINT_NAME)
    before = open(path, "rb").read()
    trainer = Trainer(dataclasses.replace(config, max_steps=8, resume=True))

    def poison(module, args, output):
        output.loss = output.loss * float("nan")
        return output

    trainer.model.register_forward_hook(poison)
    with pytest.raises(
        NonFiniteLossError,
        match=r"step 3: the loss is nan; the run stopped before updating the model with it\. The last good "
        r"checkpoint, .*checkpoint\.pt \(step 2\), is intact\. Start a new run \(another --out, or --restart "
        r"here\) with a lower --lr \(this one had lr .* at this step, optimizer adamw\), or a longer warm-up "
        r"\(--warmup-steps 10; this run warms up for 0\)\.$",
    ):
        trainer.run()
    assert open(path, "rb").read() == before
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the bad step was not applied


def test_an_occupied_out_folder_is_never_overwritten(tiny):
    config = tiny(out="taken", max_steps=2)
    train(config)
    before = open(os.path.join(config.out, CHECKPOINT_NAME), "rb").read()
    with pytest.raises(
        ConfigError,
        match=r"--out .*taken: the folder already holds a run \(checkpoint\.pt, "
        r"metrics\.jsonl, config\.json, result\.json\)\. Continue it with --resume",
    ):
        train(config)
    assert open(os.path.join(config.out, CHECKPOINT_NAME), "rb").read() == before


def test_resume_rejects_a_checkpoint_of_another_configuration(tiny):
    config = tiny(out="other", max_steps=2)
    train(config)
    path = os.path.join(config.out, CHECKPOINT_NAME)
    before = open(path, "rb").read()
    lr = memopt.recommended_hparams("adamw")["lr"]
    with pytest.raises(
        CheckpointError,
        match=rf"was made by another configuration:\n  hparams: checkpoint has \{{'lr': {lr}.*\}}, this run has "
        rf"\{{'lr': {lr * 3}.*\}}\nRerun with the original settings \(saved in .*config\.json\)",
    ):
        train(dataclasses.replace(config, lr=lr * 3, resume=True))
    with pytest.raises(CheckpointError, match=r"seq_len: checkpoint has 32, this run has 16"):
        train(dataclasses.replace(config, seq_len=16, resume=True))
    assert open(path, "rb").read() == before


def test_resume_without_a_checkpoint(tiny):
    with pytest.raises(CheckpointError, match=r"--resume: no checkpoint at .*nothing.*checkpoint\.pt"):
        train(tiny(out="nothing", resume=True))


def test_invalid_values_name_their_flag(tiny):
    for overrides, message in [
        ({"batch_size": 0}, "--batch-size 0: must be a positive integer"),
        ({"max_steps": -5}, "--max-steps -5: must be positive"),
        ({"eval_every": -1}, "--eval-every -1: must be 0"),
        ({"dtype": "fp16"}, "--dtype 'fp16': choose auto, fp32 or bf16"),
        ({"optimizer": "adamww"}, r"--optimizer 'adamww': unknown optimizer \(did you mean 'adamw'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            train(tiny(**overrides))
