"""The configuration of one training run and the per-preset training recipes.

Every setting is declared once, as a field of :class:`TrainConfig` with its flag (:mod:`memopt.harness.train.options`);
``memopt train`` and ``memopt compare`` generate their run flags from these declarations. Values come in three
layers: the defaults of :class:`TrainConfig`, then the recipe of the chosen preset
(:data:`RECIPES`: the paper's settings for ``60m`` and up, minutes-long settings for ``tiny``/``small``),
then what the user set explicitly. :func:`make_config` applies them in that order.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from memopt.harness.memory.techniques import Techniques, check_sparsity
from memopt.harness.train.choices import DTYPES, PARALLEL, PARAM_DTYPES, check_choice
from memopt.harness.train.data import DataConfig
from memopt.harness.train.errors import ConfigError
from memopt.harness.train.models import PRESETS, check_preset
from memopt.harness.train.options import Flag, count, duration, options, setting
from memopt.harness.train.schedule import SCHEDULES, ScheduleConfig
from memopt.harness.train.tokenizer import KINDS

__all__ = ["DEFAULT_STEPS", "PARAM_DTYPES", "RECIPES", "TrainConfig", "make_config"]

DEFAULT_STEPS = 200

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
        weight_norm: weight-normalize every ``nn.Linear`` (:func:`memopt.harness.train.reparam.apply_weight_norm`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        parallel: under ``torchrun``, ``"fsdp"`` (FSDP2, one unit per transformer block) or ``"ddp"``;
            ignored in a single process (see :mod:`memopt.harness.train.distributed`).
        max_steps, max_tokens, max_time: limits; the run stops at the first reached. Without max_steps and
            max_tokens the recipe's (or 200) steps are used. ``max_time`` is in seconds of wall time.
        schedule_steps: the schedule's length (default: the step limit). Set it to stop a run early and
            continue it later with ``resume`` on the same schedule. Steps past its end hold a cosine at its
            floor (:class:`memopt.harness.train.schedule.HoldAfterEnd`).
        eval_every: evaluate every this many steps (and at the end); 0 only at the end.
        eval_batches: validation batches (of ``batch_size`` sequences), fixed for the whole run.
        save_every: checkpoint every this many steps (and at the end); 0 only at the end.
        save_checkpoints: False writes no checkpoint at all.
        seed: seeds model initialisation and data order.
        out: run folder (metrics, config, checkpoint, result).
        resume: continue the run in ``out`` from its checkpoint (keeping the schedule it started with unless
            ``schedule_steps`` is given, so that a larger ``max_steps`` extends a finished run).
        restart: start the run in ``out`` again, removing the run files an earlier start left there.
        trust_checkpoint: allow full unpickling of the checkpoint (only for files you wrote).
        quiet: no progress bar or messages.
    """

    # Each flag is declared with its field: the command line is generated from these (options.py).
    # fmt: off
    preset: str = setting("small", flag=Flag(
        f"model preset and its training recipe: {', '.join(PRESETS)}", "model", "NAME"))
    model_config: str | None = setting(None, flag=Flag(
        "a transformers causal-LM config.json to use instead of the preset's model", "model", "PATH"))
    data: str | None = setting(None, flag=Flag(
        "text file, JSON Lines file with a 'text' field, directory of them, or a built-in corpus: "
        "builtin:sympy, builtin:python-reference (small, quick)", "data", "PATH",
        default_text="builtin:sympy, the Python source of the installed SymPy package"))
    tokenizer: str = setting("bpe", flag=Flag("BPE trained on the data, or bytes", "data", choices=KINDS))
    vocab_size: int = setting(2048, flag=Flag("BPE vocabulary size", "data", "N"))
    val_fraction: float = setting(0.05, flag=Flag("share of the text held out for validation", "data", "F"))
    cache_dir: str | None = setting(None, flag=Flag(
        "tokenized-data cache", "data", "DIR", default_text="$MEMOPT_CACHE_DIR or ~/.cache/memopt"))
    seq_len: int = setting(128, flag=Flag("tokens per sequence", "data", "N"))
    batch_size: int = setting(16, flag=Flag("sequences per microbatch", "data", "N"))
    grad_accum: int = setting(1, flag=Flag("microbatches per optimizer step", "data", "N"))
    optimizer: str = setting("adamw", flag=Flag(
        "registry name (see `memopt list`)", "optimizer", "NAME", commands=("train",)))
    lr: float | None = setting(None, flag=Flag(
        "peak learning rate", "optimizer", default_text="the registry's recommended"))
    hparams: dict[str, Any] = field(default_factory=dict)  # from --opt KEY=VALUE, parsed by the command line
    clip: float | None = setting(1.0, flag=Flag("gradient-norm clip, 0 = off", "optimizer", "NORM"))
    schedule: str = setting("cosine", flag=Flag("LR schedule after warm-up", "optimizer", choices=SCHEDULES))
    warmup_steps: int | None = setting(None, flag=Flag(
        "steps of linear warm-up", "optimizer", "N", default_text="10% of the schedule"))
    min_lr_ratio: float = setting(0.1, flag=Flag("cosine floor / peak lr", "optimizer", "F"))
    restart_steps: int | None = setting(None, flag=Flag("SGDR first period", "optimizer", "N"))
    restart_mult: int = setting(1, flag=Flag("SGDR period multiplier", "optimizer", "N"))
    dtype: str = setting("auto", flag=Flag(
        "bf16 autocast or fp32", choices=DTYPES, default_text="auto: bf16 on a GPU that has it"))
    param_dtype: str = setting("fp32", flag=Flag(
        "parameters in fp32, or bf16 rounded to nearest, stochastically (sr), or with an fp32 master copy",
        choices=PARAM_DTYPES))
    sparsity: float = setting(0.0, flag=Flag(
        "prune this fraction of the linear weights by magnitude at initialisation, kept zero", metavar="F"))
    activation_checkpointing: bool = setting(False, flag=Flag("recompute activations in backward to save memory"))
    weight_norm: bool = setting(False, flag=Flag(
        "weight normalization (Salimans & Kingma 2016) of every linear layer: w = g v / |v| per output unit, "
        "by torch.nn.utils.parametrizations.weight_norm", "model"))
    offload: str = setting("none", flag=Flag(
        "optimizer state (and fp32 masters) in host memory (cpu) or in files (disk), stepped in backward",
        "optimizer", choices=("none", "cpu", "disk")))
    offload_path: str | None = setting(None, flag=Flag(
        "folder for --offload disk", "optimizer", "DIR", default_text="RUN/optimizer-state"))
    device: str = setting("auto", flag=Flag("auto, cpu, cuda, cuda:N"))
    parallel: str = setting("fsdp", flag=Flag(
        "under torchrun: shard the model with FSDP2 or replicate it with DDP", choices=PARALLEL))
    max_steps: int | None = setting(None, flag=Flag("optimizer steps", metavar="N"))
    max_tokens: int | None = setting(None, flag=Flag("training tokens, e.g. 2M", metavar="N", parse=count))
    max_time: float | None = setting(None, flag=Flag("wall time, e.g. 90s, 10m", metavar="T", parse=duration))
    schedule_steps: int | None = setting(None, flag=Flag(
        "schedule length if not the step limit (to stop early and --resume later; a cosine holds its floor "
        "after it)", "optimizer", "N"))
    eval_every: int = setting(50, flag=Flag(
        "evaluate every N steps (and at the end); 0 = only at the end", metavar="N"))
    eval_batches: int = setting(8, flag=Flag("fixed validation batches", metavar="N"))
    save_every: int = setting(0, flag=Flag(
        "checkpoint every N steps (and at the end); 0 = only at the end", metavar="N", commands=("train",)))
    save_checkpoints: bool = True
    seed: int = setting(0, flag=Flag("model init and data order"))
    out: str = setting("runs/train", flag=Flag("run folder", metavar="DIR", default_text="runs/COMMAND-TIMESTAMP"))
    resume: bool = setting(False, flag=Flag(
        "continue the run in --out from its checkpoint; with a larger --max-steps, extend a finished run (the "
        "schedule is kept: a cosine stays at its floor after its end)", commands=("train",)))
    restart: bool = setting(False, flag=Flag(
        "start the run in --out again from step 0, removing its files (config, metrics, checkpoint, result)",
        commands=("train",)))
    trust_checkpoint: bool = setting(False, flag=Flag(
        "allow loading a checkpoint whose optimizer state holds Python objects (only files you wrote)",
        commands=("train",)))
    quiet: bool = setting(False, flag=Flag("no progress bar or messages"))
    # fmt: on

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

    def techniques(self) -> Techniques:
        """The memory techniques of the run (:mod:`memopt.harness.memory.techniques`)."""
        return Techniques(
            microbatches=self.grad_accum,
            checkpointing=self.activation_checkpointing,
            precision=self.param_dtype,
            sparsity=self.sparsity,
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
        for option in options(TrainConfig, "train"):
            if option.flag.choices is not None:
                check_choice(option.name, getattr(self, option.dest), option.flag.choices)
        if self.param_dtype != "fp32" and self.dtype == "bf16":
            raise ConfigError(
                f"--param-dtype {self.param_dtype} with --dtype bf16: bf16 parameters compute in bf16 already; "
                "drop --dtype bf16 (autocast is for fp32 parameters)."
            )
        check_sparsity(self.sparsity)
        if self.offload_path is not None and self.offload != "disk":
            raise ConfigError(f"--offload-path {self.offload_path}: only with --offload disk.")
        if self.offload != "none" and self.param_dtype not in ("fp32", "bf16-master"):
            raise ConfigError(
                f"--offload {self.offload} with --param-dtype {self.param_dtype}: offloading keeps an fp32 master of "
                "bf16 parameters itself; use --param-dtype bf16-master (or fp32)."
            )
        if self.weight_norm and self.sparsity:
            raise ConfigError(
                f"--weight-norm with --sparsity {self.sparsity}: pruning zeroes entries of w, but weight "
                "normalization recomputes w = g v / |v| from new parameters at every step; use one of the two."
            )


def make_config(preset: str | None = None, **explicit: Any) -> TrainConfig:
    """A :class:`TrainConfig` from the defaults, then ``preset``'s recipe, then the ``explicit`` values.

    ``explicit`` values that are None are ignored, so command-line flags that were not given fall through
    to the recipe.

    Raises:
        ConfigError: an unknown field name (a programming error in the caller) or preset.
    """
    preset = preset or TrainConfig.preset
    check_preset(preset)
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
