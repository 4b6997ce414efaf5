"""The language-model half of the memory study: the harness's ``small`` preset trained with each mix.

Each mix is one ``memopt train`` run (same data, seed and token budget) whose final validation loss is
compared with the baseline's, and one measured profile (``memopt memory --mode measure``) of the same
model, optimizer, batch and techniques, whose peak is compared with the baseline's.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memopt.harness.bench.memory_study_report import _write, summarize
from memopt.harness.memory.profile import measure
from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.workloads import preset_workload

PRESET = "small"
SEQ_LEN, BATCH, STEPS, VOCAB = 128, 16, 150, 2048
EVAL_SEQUENCES = 128


@dataclass(frozen=True)
class LMMix:
    """A mix of the LM study: harness settings, and the planner's view of them."""

    name: str
    optimizer: str = "adamw"
    grad_accum: int = 1
    checkpointing: bool = False
    dtype: str = "fp32"
    param_dtype: str = "fp32"
    sparsity: float = 0.0
    hparams: dict[str, Any] = field(default_factory=dict)

    def techniques(self) -> Techniques:
        precision = (
            self.param_dtype if self.param_dtype != "fp32" else ("bf16-autocast" if self.dtype == "bf16" else "fp32")
        )
        return Techniques(
            microbatches=self.grad_accum, checkpointing=self.checkpointing, precision=precision, sparsity=self.sparsity
        )


def lm_mixes() -> list[LMMix]:
    """Each technique alone, then combinations; every run sees ``BATCH`` sequences per step."""
    return [
        LMMix("baseline (adamw)"),
        LMMix("microbatches 4", grad_accum=4),
        LMMix("checkpointing", checkpointing=True),
        LMMix("bf16 + stochastic rounding", param_dtype="bf16-sr"),
        LMMix("sparsity 0.5", sparsity=0.5),
        LMMix("adamw_snsm", optimizer="adamw_snsm"),
        LMMix("mb4 + ckpt + adamw_snsm", optimizer="adamw_snsm", grad_accum=4, checkpointing=True),
        LMMix("mb4 + ckpt + bf16-sr", grad_accum=4, checkpointing=True, param_dtype="bf16-sr"),
        LMMix(
            "mb4 + ckpt + bf16-sr + adamw_snsm", optimizer="adamw_snsm", grad_accum=4, checkpointing=True,
            param_dtype="bf16-sr",
        ),
    ]  # fmt: skip


def train_lm(mix: LMMix, seed: int, cache_dir: str | None) -> dict[str, float]:
    """Train the mix with the harness; its final validation loss."""
    from memopt.harness.train.config import make_config
    from memopt.harness.train.loop import train

    with tempfile.TemporaryDirectory() as out:
        config = make_config(
            PRESET,
            optimizer=mix.optimizer,
            hparams=dict(mix.hparams),
            seq_len=SEQ_LEN,
            batch_size=BATCH // mix.grad_accum,
            grad_accum=mix.grad_accum,
            activation_checkpointing=mix.checkpointing,
            dtype=mix.dtype,
            param_dtype=mix.param_dtype,
            sparsity=mix.sparsity,
            max_steps=STEPS,
            eval_every=0,
            # the validation set is eval_batches x batch_size sequences: the same 128 for every mix
            eval_batches=EVAL_SEQUENCES // (BATCH // mix.grad_accum),
            save_checkpoints=False,
            device="cpu",
            seed=seed,
            cache_dir=cache_dir,
            out=out,
            quiet=True,
        )
        result = train(config)
    return {"val_loss": float(result.final_val_loss), "tokens_per_s": float(result.tokens_per_s or 0.0)}


def lm_memory(mix: LMMix) -> dict[str, Any]:
    """The measured breakdown of two steps of the mix (CPU, real tensors, random tokens of the same shape)."""
    breakdown = measure(
        preset_workload(PRESET, SEQ_LEN, VOCAB), mix.optimizer, dict(mix.hparams), batch_size=BATCH,
        techniques=mix.techniques(),
    )  # fmt: skip
    return {"peak": breakdown.peak, "components": breakdown.components, "at_peak": breakdown.at_peak}


def run_lm(out: Path, seeds: int, cache_dir: str | None = None) -> dict[str, Any]:
    """The LM half of the study; writes ``lm.json`` and ``lm.png``."""

    rows = []
    for mix in lm_mixes():
        memory = lm_memory(mix)
        losses = [train_lm(mix, seed, cache_dir)["val_loss"] for seed in range(seeds)]
        rows.append({"mix": mix.name, "techniques": mix.techniques().to_dict(), "optimizer": mix.optimizer,
                     **memory, "val_loss": losses})  # fmt: skip
        print(f"{mix.name:<40} peak {memory['peak'] / 2**20:7.2f} MiB  val loss {losses}", flush=True)
    summarize(rows, "val_loss")
    settings = {"preset": PRESET, "seq_len": SEQ_LEN, "batch": BATCH, "steps": STEPS, "seeds": seeds}
    return _write(out, "lm", rows, settings, "validation loss change (nats)")
