"""The configuration of one training run, the per-preset training recipes, and the run's identity.

Values come in three layers: the defaults of :class:`TrainConfig`, then the recipe of the chosen preset
(:data:`RECIPES`: the paper's settings for ``60m`` and up, minutes-long settings for ``tiny``/``small``),
then what the user set explicitly. :func:`make_config` applies them in that order.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from memopt.harness.train.data import DataConfig
from memopt.harness.train.errors import ConfigError
from memopt.harness.train.schedule import ScheduleConfig

DEFAULT_STEPS = 200
#: ``--param-dtype`` choices: the bf16 precisions of :mod:`memopt.harness.memory.techniques`
PARAM_DTYPES = ("fp32", "bf16", "bf16-sr", "bf16-master")

_PAPER = {  # GaLore / Subset-Norm LLaMA pretraining: 256 tokens x 512 sequences per step, bf16, clip 1.0
    "seq_len": 256,
    "batch_size": 128,
    "grad_accum": 4,
    "vocab_size": 32000,
    "eval_every": 1000,
    "eval_batches": 16,
    "save_every": 1000,
    "clip": 1.0,
    "min_lr_ratio": 0.1,
}

#: Training settings per model preset; explicit flags override them.
RECIPES: dict[str, dict[str, Any]] = {
    "tiny": {"seq_len": 64, "batch_size": 16, "vocab_size": 1024, "max_steps": 100, "eval_every": 20},
    "small": {"seq_len": 128, "batch_size": 16, "vocab_size": 2048, "max_steps": 300, "eval_every": 25},
    "9m": {**_PAPER, "max_steps": 10_000},
    "20m": {**_PAPER, "max_steps": 10_000},
    "35m": {**_PAPER, "max_steps": 10_000},
    "60m": {**_PAPER, "max_steps": 10_000},
    "130m": {**_PAPER, "max_steps": 20_000},
    "350m": {**_PAPER, "max_steps": 60_000},
    "1b": {**_PAPER, "max_steps": 100_000},
}


@dataclass
class TrainConfig:
    """Everything that defines one training run.

    Attributes:
        preset: model preset (``memopt.harness.train.models.PRESETS``); also picks the training recipe.
        model_config: a ``transformers`` config JSON to use instead of the preset's model.
        data, tokenizer, vocab_size, val_fraction, cache_dir: see :class:`memopt.harness.train.data.DataConfig`.
        seq_len: tokens per sequence.
        batch_size: sequences per microbatch.
        grad_accum: microbatches per optimizer step (gradient accumulation).
        optimizer: registry name.
        lr: peak learning rate; None for the registry's recommended value.
        hparams: other optimizer hyperparameters, over the registry's recommended ones.
        clip: gradient-norm clipping threshold; None or 0 disables.
        schedule, warmup_steps, min_lr_ratio, restart_steps, restart_mult: the LR schedule
            (``warmup_steps`` None = 10% of the schedule).
        dtype: ``"fp32"``, ``"bf16"`` (autocast) or ``"auto"`` (bf16 on a GPU that supports it, else fp32).
        param_dtype: how parameters are held: ``"fp32"``; ``"bf16"`` (rounded to nearest), ``"bf16-sr"``
            (stochastic rounding by the optimizer) or ``"bf16-master"`` (an fp32 master copy); see
            :mod:`memopt.harness.memory.techniques`.
        sparsity: fraction of the linear weights pruned by magnitude at initialisation and kept zero
            (stored compactly, :mod:`memopt.harness.memory.sparsity`); 0 disables.
        activation_checkpointing: recompute activations in backward to save memory.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        parallel: under ``torchrun``, ``"fsdp"`` (FSDP2, one unit per transformer block) or ``"ddp"``;
            ignored in a single process (see :mod:`memopt.harness.train.distributed`).
        max_steps, max_tokens, max_time: limits; the run stops at the first reached. Without max_steps and
            max_tokens the recipe's (or 200) steps are used. ``max_time`` is in seconds of wall time.
        schedule_steps: the schedule's length (default: the step limit). Set it to stop a run early and
            continue it later with ``resume`` on the same schedule.
        eval_every: evaluate every this many steps (and at the end); 0 only at the end.
        eval_batches: validation batches (of ``batch_size`` sequences), fixed for the whole run.
        save_every: checkpoint every this many steps (and at the end); 0 only at the end.
        save_checkpoints: False writes no checkpoint at all.
        seed: seeds model initialisation and data order.
        out: run folder (metrics, config, checkpoint, result).
        resume: continue the run in ``out`` from its checkpoint.
        trust_checkpoint: allow full unpickling of the checkpoint (only for files you wrote).
        quiet: no progress bar or messages.
    """

    preset: str = "small"
    model_config: str | None = None
    data: str | None = None
    tokenizer: str = "bpe"
    vocab_size: int = 2048
    val_fraction: float = 0.05
    cache_dir: str | None = None
    seq_len: int = 128
    batch_size: int = 16
    grad_accum: int = 1
    optimizer: str = "adamw"
    lr: float | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    clip: float | None = 1.0
    schedule: str = "cosine"
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    restart_steps: int | None = None
    restart_mult: int = 1
    dtype: str = "auto"
    param_dtype: str = "fp32"
    sparsity: float = 0.0
    activation_checkpointing: bool = False
    device: str = "auto"
    parallel: str = "fsdp"
    max_steps: int | None = None
    max_tokens: int | None = None
    max_time: float | None = None
    schedule_steps: int | None = None
    eval_every: int = 50
    eval_batches: int = 8
    save_every: int = 0
    save_checkpoints: bool = True
    seed: int = 0
    out: str = "runs/train"
    resume: bool = False
    trust_checkpoint: bool = False
    quiet: bool = False

    def data_config(self) -> DataConfig:
        """The data part of the configuration."""
        return DataConfig(
            path=self.data,
            tokenizer=self.tokenizer,
            vocab_size=self.vocab_size,
            val_fraction=self.val_fraction,
            cache_dir=self.cache_dir,
        )

    @property
    def tokens_per_step(self) -> int:
        """Input tokens per optimizer step."""
        return self.seq_len * self.batch_size * self.grad_accum

    def total_steps(self) -> int:
        """The step limit: the smaller of ``max_steps`` and ``max_tokens`` in steps (default 200)."""
        limits = []
        if self.max_steps is not None:
            limits.append(self.max_steps)
        if self.max_tokens is not None:
            limits.append(math.ceil(self.max_tokens / self.tokens_per_step))
        return min(limits) if limits else DEFAULT_STEPS

    def schedule_length(self) -> int:
        """Steps the LR schedule spans."""
        return self.schedule_steps if self.schedule_steps is not None else self.total_steps()

    def schedule_config(self) -> ScheduleConfig:
        """The LR-schedule part of the configuration, with the warm-up resolved."""
        length = self.schedule_length()
        warmup = self.warmup_steps if self.warmup_steps is not None else length // 10
        return ScheduleConfig(
            kind=self.schedule,
            warmup_steps=warmup,
            min_lr_ratio=self.min_lr_ratio,
            restart_steps=self.restart_steps,
            restart_mult=self.restart_mult,
        )

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the flag of the first invalid value."""
        positive = {
            "--seq-len": self.seq_len,
            "--batch-size": self.batch_size,
            "--grad-accum": self.grad_accum,
            "--eval-batches": self.eval_batches,
        }
        for flag, value in positive.items():
            if value < 1:
                raise ConfigError(f"{flag} {value}: must be a positive integer.")
        optional_positive = {
            "--max-steps": self.max_steps,
            "--max-tokens": self.max_tokens,
            "--max-time": self.max_time,
            "--schedule-steps": self.schedule_steps,
            "--lr": self.lr,
        }
        for flag, value in optional_positive.items():
            if value is not None and value <= 0:
                raise ConfigError(f"{flag} {value}: must be positive.")
        for flag, value in {"--eval-every": self.eval_every, "--save-every": self.save_every}.items():
            if value < 0:
                raise ConfigError(f"{flag} {value}: must be 0 (only at the end) or a positive number of steps.")
        if self.clip is not None and self.clip < 0:
            raise ConfigError(f"--clip {self.clip}: must be positive, or 0 to disable clipping.")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"--dtype {self.dtype!r}: choose auto, fp32 or bf16.")
        if self.parallel not in ("fsdp", "ddp"):
            raise ConfigError(f"--parallel {self.parallel!r}: choose fsdp or ddp.")
        if self.param_dtype not in PARAM_DTYPES:
            raise ConfigError(f"--param-dtype {self.param_dtype!r}: choose one of {', '.join(PARAM_DTYPES)}.")
        if self.param_dtype != "fp32" and self.dtype == "bf16":
            raise ConfigError(
                f"--param-dtype {self.param_dtype} with --dtype bf16: bf16 parameters compute in bf16 already; "
                "drop --dtype bf16 (autocast is for fp32 parameters)."
            )
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(
                f"--sparsity {self.sparsity}: the fraction of weights pruned must be in [0, 1), e.g. 0.5."
            )
        if self.schedule_steps is not None and self.schedule_steps < self.total_steps() and self.schedule == "cosine":
            raise ConfigError(
                f"--schedule-steps {self.schedule_steps}: shorter than the run's {self.total_steps()} steps; "
                "the cosine would rise again after its end. Raise --schedule-steps or lower --max-steps."
            )


def make_config(preset: str | None = None, **explicit: Any) -> TrainConfig:
    """A :class:`TrainConfig` from the defaults, then ``preset``'s recipe, then the ``explicit`` values.

    ``explicit`` values that are None are ignored, so command-line flags that were not given fall through
    to the recipe.

    Raises:
        ConfigError: an unknown field name (a programming error in the caller) or preset.
    """
    from memopt.harness.train.errors import closest
    from memopt.harness.train.models import PRESETS

    preset = preset or TrainConfig.preset
    if preset not in PRESETS:
        raise ConfigError(
            f"--preset {preset!r}: unknown model preset{closest(preset, PRESETS)}. Choose one of "
            f"{', '.join(PRESETS)}, or give a transformers config file with --model-config PATH."
        )
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(explicit) - names
    if unknown:
        raise ConfigError(f"unknown training settings {sorted(unknown)}")
    given = {k: v for k, v in explicit.items() if v is not None}
    recipe = dict(RECIPES.get(preset, {}))
    if "max_tokens" in given and "max_steps" not in given:
        recipe.pop("max_steps", None)  # a token budget replaces the recipe's step count
    values = {**recipe, **given}
    return TrainConfig(preset=preset, **values)
