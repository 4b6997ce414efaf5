"""The training loop: one model, one optimizer, one dataset; metrics, evaluation and checkpoints.

Read :meth:`Trainer.run` top to bottom: each step takes ``grad_accum`` microbatches (batch ``k`` of the run
is fixed by the seed), averages their loss, clips the gradient norm, checks that loss and gradient are
finite, steps the optimizer and the LR scheduler, and logs one JSON line. Every ``eval_every`` steps the
model is evaluated on a fixed set of validation batches; every ``save_every`` steps (and at the end) a
checkpoint is written atomically. On CPU a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from memopt.train import checkpoint as ckpt
from memopt.train import models
from memopt.train import optimizers as opt_lib
from memopt.train.config import TrainConfig
from memopt.train.data import PreparedData, TokenBatches, check_sizes, prepare_data
from memopt.train.errors import CheckpointError, ConfigError, NonFiniteLossError
from memopt.train.metrics import METRICS_NAME, MetricsWriter, read_metrics, truncate_after
from memopt.train.schedule import build_scheduler

CONFIG_NAME = "config.json"
RESULT_NAME = "result.json"


@dataclass
class TrainResult:
    """What a run measured (also written to ``<out>/result.json``)."""

    optimizer: str
    hparams: dict[str, Any]
    steps: int
    tokens: int
    stopped_by: str
    final_val_loss: float | None
    final_val_ppl: float | None
    evals: list[dict[str, Any]]
    state_bytes: int
    num_params: int
    median_step_time: float | None
    tokens_per_s: float | None
    out: str
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: not a device ({exc}); use auto, cpu or cuda[:N].") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu.")
    return device


def resolve_bf16(dtype: str, device: torch.device) -> bool:
    """Whether to autocast to bfloat16: ``"auto"`` means on CUDA devices that support it."""
    if dtype == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return dtype == "bf16"


def memory_techniques(config: TrainConfig):
    """The :class:`memopt.memory.techniques.Techniques` of a run (for the parts that change the model)."""
    from memopt.memory.techniques import Techniques

    return Techniques(
        microbatches=config.grad_accum,
        checkpointing=config.activation_checkpointing,
        precision=config.param_dtype,
        sparsity=config.sparsity,
    )


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in backward (``transformers``' own switch)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class Trainer:
    """Sets up a run from a :class:`TrainConfig` (or resumes it) and trains it with :meth:`run`.

    Args:
        config: the run's configuration.
        data: already prepared data (``memopt compare`` prepares it once for all optimizers); None
            prepares it from ``config``.
    """

    def __init__(self, config: TrainConfig, data: PreparedData | None = None):
        config.validate()
        opt_lib.check_name(config.optimizer)
        self.config = config
        self.out = Path(config.out)
        self.data = data if data is not None else prepare_data(config.data_config())
        check_sizes(self.data, config.seq_len, config.batch_size)
        self.device = resolve_device(config.device)
        self.bf16 = resolve_bf16(config.dtype, self.device)

        self.model_config = models.model_config(
            config.preset, config.model_config, self.data.vocab_size, config.seq_len
        )
        self.model = models.build_model(self.model_config, config.seed).to(self.device)
        if config.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        self.techniques = memory_techniques(config)
        self.num_params = models.count_parameters(self.model)
        self.hparams = opt_lib.resolve_hparams(
            config.optimizer, config.hparams, config.lr, getattr(self.model_config, "hidden_size", None)
        )
        self.optimizer = self._build_optimizer()
        self.total_steps = config.total_steps()
        self.schedule_config = config.schedule_config()
        self.scheduler = build_scheduler(
            self.optimizer, self.schedule_config, config.schedule_length(), float(self.hparams["lr"])
        )
        self.train_batches = TokenBatches(self.data.train, config.seq_len, config.batch_size, config.seed)
        self.val_inputs = self._validation_batches()
        self.step = 0
        self.tokens = 0

    # ------------------------------------------------------------------ setup helpers

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """Apply the memory techniques that change the parameters (sparsity, bf16 parameters and their
        master copy), then build the optimizer over them."""
        from memopt.memory.master_weights import master_copy
        from memopt.memory.profile import build_optimizer, cast_floating
        from memopt.memory.sparsity import prune_model

        techniques = self.techniques
        if techniques.sparsity:
            prune_model(self.model, techniques.sparsity)
        master = master_copy(self.model) if techniques.precision == "bf16-master" else None
        cast_floating(self.model, techniques.param_dtype)
        optimizer = build_optimizer(self.model, master, self.config.optimizer, self.hparams, techniques)
        if master is not None and optimizer.needs_closure:
            raise ConfigError(
                f"--param-dtype bf16-master: {self.config.optimizer} re-evaluates the loss in its step (a closure), "
                "which the master-weight wrapper does not support; use --param-dtype bf16-sr."
            )
        return optimizer

    def _validation_batches(self) -> list[torch.Tensor]:
        """The fixed validation set: the first ``eval_batches`` batches of blocks of the validation split."""
        val = TokenBatches(self.data.val, self.config.seq_len, self.config.batch_size, seed=0, shuffle=False)
        blocks = torch.from_numpy(val.blocks[: self.config.eval_batches * self.config.batch_size].astype("int64"))
        return list(torch.split(blocks, self.config.batch_size))

    def identity(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed (JSON-compatible)."""
        model = {
            k: v
            for k, v in self.model_config.to_dict().items()
            if not k.startswith("_") and k != "transformers_version"
        }
        identity = {
            "model": model,
            "data": self.data.key,
            "seq_len": self.config.seq_len,
            "batch_size": self.config.batch_size,
            "grad_accum": self.config.grad_accum,
            "optimizer": self.config.optimizer,
            "hparams": self.hparams,
            "clip": self.config.clip or None,
            "schedule": dataclasses.asdict(self.schedule_config),
            "schedule_steps": self.config.schedule_length(),
            "bf16": self.bf16,
            "seed": self.config.seed,
            "eval_batches": self.config.eval_batches,
        }
        # memory techniques that change the model, named only when used (older checkpoints stay resumable)
        if self.config.param_dtype != "fp32":
            identity["param_dtype"] = self.config.param_dtype
        if self.config.sparsity:
            identity["sparsity"] = self.config.sparsity
        return json.loads(json.dumps(identity, default=str))

    def _prepare_out_dir(self) -> None:
        """Refuse to overwrite an earlier run; write the configuration."""
        if not self.config.resume:
            taken = [n for n in (ckpt.CHECKPOINT_NAME, METRICS_NAME, CONFIG_NAME) if (self.out / n).exists()]
            if taken:
                raise ConfigError(
                    f"--out {self.out}: the folder already holds a run ({', '.join(taken)}). Continue it "
                    "with --resume, or choose another --out; nothing was changed."
                )
        record = {"config": dataclasses.asdict(self.config), "identity": self.identity(), "argv": sys.argv}
        text = json.dumps(record, indent=2, default=str)
        ckpt.atomic_write_bytes(self.out / CONFIG_NAME, lambda f: f.write(text.encode()))

    def _restore(self) -> None:
        """Load the checkpoint in ``out`` and check that it belongs to this configuration."""
        path = self.out / ckpt.CHECKPOINT_NAME
        payload = ckpt.load_checkpoint(path, trust=self.config.trust_checkpoint)
        saved = json.loads(payload["identity"])
        differences = ckpt.identity_diff(saved, self.identity())
        if differences:
            raise CheckpointError(
                f"--resume: {path} was made by another configuration:\n  "
                + "\n  ".join(differences)
                + f"\nRerun with the original settings (saved in {self.out / CONFIG_NAME}), or start a new "
                "run with another --out; the checkpoint was not changed."
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        ckpt.set_rng_state(payload["rng"])
        self.step = int(payload["step"])
        self.tokens = int(payload["tokens"])
        truncate_after(self.out / METRICS_NAME, self.step, self.config.eval_every)

    def _save(self) -> None:
        ckpt.save_checkpoint(
            self.out / ckpt.CHECKPOINT_NAME,
            {
                "identity": json.dumps(self.identity()),
                "step": self.step,
                "tokens": self.tokens,
                "microbatch": self.step * self.config.grad_accum,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": ckpt.rng_state(),
            },
        )

    # ------------------------------------------------------------------ the loop

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _forward_backward(self, *, count_tokens: bool) -> torch.Tensor:
        """Gradients of this step's ``grad_accum`` microbatches at the current parameters; the mean loss."""
        accum = self.config.grad_accum
        total = torch.zeros((), device=self.device)
        for micro in range(accum):
            inputs = self.train_batches.batch(self.step * accum + micro).to(self.device, non_blocking=True)
            with self._autocast():
                loss = self.model(input_ids=inputs, labels=inputs).loss
            (loss / accum).backward()
            total += loss.detach()
            if count_tokens:
                self.tokens += inputs.numel()
        return total / accum

    def _closure(self) -> torch.Tensor:
        """For optimizers with ``needs_closure``: the same minibatch's loss and (clipped) gradients at the
        parameters the optimizer has set, as often as it asks."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._forward_backward(count_tokens=False)
        if self.config.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        return loss

    def _train_step(self) -> tuple[float, float | None, float]:
        """One optimizer step over ``grad_accum`` microbatches; returns (loss, grad norm, lr used)."""
        loss_value = self._forward_backward(count_tokens=True).item()
        grad_norm = None
        if self.config.clip:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip))
        lr = float(self.optimizer.param_groups[0]["lr"])
        if not math.isfinite(loss_value) or (grad_norm is not None and not math.isfinite(grad_norm)):
            self._stop_non_finite(loss_value, grad_norm, lr)
        if getattr(self.optimizer, "needs_closure", False):
            self.optimizer.step(self._closure)
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_value, grad_norm, lr

    def _stop_non_finite(self, loss: float, grad_norm: float | None, lr: float) -> None:
        path = self.out / ckpt.CHECKPOINT_NAME
        if path.exists():
            last = f"The last good checkpoint, {path}, is intact."
        else:
            last = "No checkpoint had been written yet."
        raise NonFiniteLossError(
            f"step {self.step + 1}: the loss is {loss} (gradient norm {grad_norm}); the run stopped before "
            f"updating the model with it. {last} Start a new run (another --out) with a lower --lr (this one "
            f"had lr {lr:g} at this step, optimizer {self.config.optimizer}) or with gradient clipping "
            "(--clip 1.0)."
        )

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean next-token loss over the fixed validation batches."""
        self.model.eval()
        total, count = 0.0, 0
        for inputs in self.val_inputs:
            inputs = inputs.to(self.device, non_blocking=True)
            with self._autocast():
                loss = self.model(input_ids=inputs, labels=inputs).loss
            total += float(loss) * inputs.shape[0]
            count += inputs.shape[0]
        self.model.train()
        return total / count

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def run(self) -> TrainResult:
        """Train until a limit is reached, then evaluate, checkpoint and return the result."""
        config = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        if config.resume:
            self._restore()
        self._prepare_out_dir()
        self.model.train()
        writer = MetricsWriter(self.out / METRICS_NAME)
        bar = tqdm(
            total=self.total_steps,
            initial=min(self.step, self.total_steps),
            unit="step",
            dynamic_ncols=True,
            disable=config.quiet or not sys.stderr.isatty(),
            desc=config.optimizer,
        )
        start = time.perf_counter()
        timed_out = False
        try:
            while self.step < self.total_steps:
                if config.max_time is not None and time.perf_counter() - start >= config.max_time:
                    timed_out = True
                    break
                step_start = time.perf_counter()
                loss, grad_norm, lr = self._train_step()
                step_time = time.perf_counter() - step_start
                tokens_per_s = config.tokens_per_step / step_time
                writer.write(
                    {
                        "event": "train",
                        "step": self.step,
                        "tokens": self.tokens,
                        "loss": loss,
                        "lr": lr,
                        "grad_norm": grad_norm,
                        "step_time": step_time,
                        "tokens_per_s": tokens_per_s,
                        "elapsed": time.perf_counter() - start,
                    }
                )
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
                if self._due(config.eval_every) or self.step == self.total_steps:
                    self._log_eval(writer, bar)
                if config.save_checkpoints and (self._due(config.save_every) or self.step == self.total_steps):
                    self._save()
            if timed_out:  # stopped early: evaluate and checkpoint where it stands, so --resume continues
                if not self._has_eval_at(self.step):
                    self._log_eval(writer, bar)
                if config.save_checkpoints:
                    self._save()
        finally:
            bar.close()
            writer.close()
        return self._result("max_time" if timed_out else self._step_limit())

    def _step_limit(self) -> str:
        """Which flag set the step count: ``max_tokens`` when it binds, else ``max_steps``."""
        config = self.config
        if config.max_tokens is not None and (
            config.max_steps is None or math.ceil(config.max_tokens / config.tokens_per_step) <= config.max_steps
        ):
            return "max_tokens"
        return "max_steps"

    def _has_eval_at(self, step: int) -> bool:
        return any(r.get("event") == "eval" and r["step"] == step for r in read_metrics(self.out / METRICS_NAME))

    def _log_eval(self, writer: MetricsWriter, bar: tqdm | None) -> None:
        began = time.perf_counter()
        val_loss = self.evaluate()
        writer.write(
            {
                "event": "eval",
                "step": self.step,
                "tokens": self.tokens,
                "val_loss": val_loss,
                "val_ppl": math.exp(min(val_loss, 700.0)),
                "eval_time": time.perf_counter() - began,
            }
        )
        if bar is not None:
            bar.set_postfix(val=f"{val_loss:.3f}", refresh=False)

    def _result(self, stopped_by: str) -> TrainResult:
        records = read_metrics(self.out / METRICS_NAME)
        evals = [r for r in records if r.get("event") == "eval"]
        step_times = [r["step_time"] for r in records if r.get("event") == "train"]
        median = statistics.median(step_times) if step_times else None
        final = evals[-1] if evals else None
        result = TrainResult(
            optimizer=self.config.optimizer,
            hparams=self.hparams,
            steps=self.step,
            tokens=self.tokens,
            stopped_by=stopped_by,
            final_val_loss=final["val_loss"] if final else None,
            final_val_ppl=final["val_ppl"] if final else None,
            evals=[{k: r[k] for k in ("step", "tokens", "val_loss", "val_ppl")} for r in evals],
            state_bytes=opt_lib.state_bytes(self.optimizer),
            num_params=self.num_params,
            median_step_time=median,
            tokens_per_s=self.config.tokens_per_step / median if median else None,
            out=str(self.out),
        )
        text = json.dumps(dataclasses.asdict(result), indent=2, default=str)
        ckpt.atomic_write_bytes(self.out / RESULT_NAME, lambda f: f.write(text.encode()))
        return result


def train(config: TrainConfig, data: PreparedData | None = None) -> TrainResult:
    """Run (or resume) the training described by ``config``; see :class:`Trainer`."""
    return Trainer(config, data).run()
