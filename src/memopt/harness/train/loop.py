"""The training loop: one model, one optimizer, one dataset; metrics, evaluation and checkpoints.

Read :meth:`Trainer.run` top to bottom: each step takes ``grad_accum`` microbatches (batch ``k`` of the run
is fixed by the seed) through the shared :class:`memopt.harness.train.step.TrainStep`, averages their loss,
clips the gradient norm, checks that loss and gradient are finite, steps the optimizer and the LR scheduler,
and logs one JSON line. Every ``eval_every`` steps the model is evaluated on a fixed set of validation
batches; every ``save_every`` steps (and at the end) a checkpoint is written atomically. On CPU a resumed
run is bit-identical to an uninterrupted one.

The same code runs in one process and under ``torchrun``: :mod:`memopt.harness.train.distributed` gives
the run its processes (a stand-in with identities for collectives in one process, DDP or FSDP2 on several),
and :class:`memopt.harness.train.run_checkpoint.RunCheckpoint` writes the checkpoint format that fits them.
"""

from __future__ import annotations

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

from memopt.harness.memory.techniques import enable_activation_checkpointing
from memopt.harness.train import distributed, models, run_folder
from memopt.harness.train import optimizers as opt_lib
from memopt.harness.train.checkpoint import atomic_write_bytes
from memopt.harness.train.config import TrainConfig
from memopt.harness.train.data import PreparedData, TokenBatches, check_sizes, prepare_data
from memopt.harness.train.errors import ConfigError, NonFiniteLossError
from memopt.harness.train.metrics import METRICS_NAME, MetricsWriter, json_safe, read_metrics, truncate_after
from memopt.harness.train.progress import Progress, ProgressDisplay, ProgressHook
from memopt.harness.train.reparam import apply_weight_norm
from memopt.harness.train.run_checkpoint import RunCheckpoint, TrainingState
from memopt.harness.train.run_folder import CONFIG_NAME, RESULT_NAME
from memopt.harness.train.schedule import HoldAfterEnd, build_scheduler, describe_extension
from memopt.harness.train.step import TrainStep, causal_lm_loss


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


def resolve_bf16(dtype: str, device: torch.device) -> bool:
    """Whether to autocast to bfloat16: ``"auto"`` means on CUDA devices that support it."""
    if dtype == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return dtype == "bf16"


class Trainer:
    """Sets up a run from a :class:`TrainConfig` (or resumes it) and trains it with :meth:`run`.

    Args:
        config: the run's configuration.
        data: already prepared data (``memopt compare`` prepares it once for all optimizers); None
            prepares it from ``config``.
        progress: a hook called with a :class:`memopt.harness.train.progress.Progress` when the run starts,
            after every step and evaluation, and when it ends (rank 0 only); more go in
            :attr:`progress_hooks`. Unless ``config.quiet``, the run's own display is one of them.
    """

    def __init__(self, config: TrainConfig, data: PreparedData | None = None, progress: ProgressHook | None = None):
        self.out = run_folder.check_out(config.out)
        run_folder.check_start(self.out, resume=config.resume, restart=config.restart)
        self.notices: list[str] = []  # what this run decided for the user (printed unless quiet)
        if config.resume:
            self._adopt_saved_schedule(config)
        config.validate()
        opt_lib.check_name(config.optimizer)
        self.config = config
        self.processes = distributed.launch(config.device, config.parallel)  # one process, or torchrun's
        self.device = self.processes.device
        # rank 0 tokenizes into the cache, the others then read it
        self.data = data if data is not None else self.processes.main_first(lambda: prepare_data(config.data_config()))
        check_sizes(self.data, config.seq_len, config.batch_size)
        self.bf16 = resolve_bf16(config.dtype, self.device)

        self.model_config = models.model_config(
            config.preset, config.model_config, self.data.vocab_size, config.seq_len
        )
        self.model = self._build_model().to(self.device)
        if config.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        self.techniques = config.techniques()
        self.num_params = models.count_parameters(self.model)
        self.processes.local_rows(torch.zeros(config.batch_size, 1))  # --batch-size must split over the ranks
        self.model = self.processes.wrap(self.model)
        self.hparams = opt_lib.resolve_hparams(
            config.optimizer, config.hparams, config.lr, getattr(self.model_config, "hidden_size", None)
        )
        self.optimizer = self._build_optimizer()
        self.total_steps = config.total_steps()
        self.schedule_config = config.schedule_config()
        self.scheduler = build_scheduler(
            self.optimizer, self.schedule_config, config.schedule_length(), float(self.hparams["lr"])
        )
        self.train_step = TrainStep(
            self.model,
            self.optimizer,
            causal_lm_loss,
            self.device,
            microbatches=config.grad_accum,
            bf16_autocast=self.bf16,
            scheduler=HoldAfterEnd(self.scheduler, config.schedule_length(), config.schedule),
            gradient_sync=lambda last: self.processes.gradient_sync(self.model, last),
        )
        self.checkpoint = RunCheckpoint(
            self.out, self.processes, trust=config.trust_checkpoint, settings_file=self.out / CONFIG_NAME
        )
        self.train_batches = TokenBatches(self.data.train, config.seq_len, config.batch_size, config.seed)
        self.val_inputs = self._validation_batches()
        self.step = 0
        self.tokens = 0
        self.progress_hooks: list[ProgressHook] = [progress] if progress is not None else []
        if not config.quiet:
            self.progress_hooks.append(ProgressDisplay())

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (always in a single process; rank 0 under torchrun)."""
        return self.processes.is_main

    # ------------------------------------------------------------------ setup

    def _build_model(self) -> torch.nn.Module:
        """The freshly initialised model, weight-normalized with ``--weight-norm``."""
        model = models.build_model(self.model_config, self.config.seed)
        if self.config.weight_norm:
            apply_weight_norm(model)
        return model

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """Apply the memory techniques that change the parameters (sparsity, bf16 parameters and their
        master copy), then build the optimizer over them."""
        from memopt.harness.memory.profile import build_optimizer, cast_floating
        from memopt.harness.memory.sparsity import prune_model
        from memopt.wrappers.master_weights import master_copy

        techniques = self.techniques
        if techniques.sparsity:
            prune_model(self.model, techniques.sparsity)
        if self.config.offload != "none":
            cast_floating(self.model, techniques.param_dtype)  # the offloaded optimizer keeps the masters
            return self._offloaded_optimizer()
        master = master_copy(self.model) if techniques.precision == "bf16-master" else None
        cast_floating(self.model, techniques.param_dtype)
        optimizer = build_optimizer(self.model, master, self.config.optimizer, self.hparams, techniques)
        if master is not None and optimizer.needs_closure:
            raise ConfigError(
                f"--param-dtype bf16-master: {self.config.optimizer} re-evaluates the loss in its step (a closure), "
                "which the master-weight wrapper does not support; use --param-dtype bf16-sr."
            )
        return optimizer

    def _offloaded_optimizer(self) -> torch.optim.Optimizer:
        """``--offload``: the optimizer steps each parameter in backward, its state in host memory or on disk
        (:mod:`memopt.offload`); it clips (``--clip``) and counts microbatches (``--grad-accum``) itself."""
        from memopt.offload.optimizer import OffloadOptimizer

        config = self.config
        if self.processes.world_size > 1:
            raise ConfigError(f"--offload {config.offload}: single-process runs only; drop --offload under torchrun.")
        path = None
        if config.offload == "disk":
            path = Path(config.offload_path) if config.offload_path else self.out / "optimizer-state"
            path.mkdir(parents=True, exist_ok=True)
        hparams = {**self.hparams, **self.techniques.optimizer_hparams()}
        try:
            return OffloadOptimizer(
                self.model,
                lambda host: opt_lib.build(host, config.optimizer, hparams),
                to=config.offload,
                path=path,
                max_grad_norm=config.clip or None,
                accumulation_steps=config.grad_accum,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--offload {config.offload} with --optimizer {config.optimizer}: {exc}") from exc

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
        if self.config.weight_norm:
            identity["weight_norm"] = True
        return json.loads(json.dumps(identity, default=str))

    def _adopt_saved_schedule(self, config: TrainConfig) -> None:
        """On ``--resume`` without ``--schedule-steps`` / ``--warmup-steps``, keep the schedule the run was
        started with (from its ``config.json``), so that ``--max-steps`` can extend a finished run; the
        steps past the schedule's end follow :class:`memopt.harness.train.schedule.HoldAfterEnd`."""
        saved = _saved_identity(self.out)
        if saved is None or "schedule_steps" not in saved:
            return  # the checkpoint's identity check reports what is wrong
        if config.schedule_steps is None:
            config.schedule_steps = int(saved["schedule_steps"])
        if config.warmup_steps is None and isinstance(saved.get("schedule"), dict):
            config.warmup_steps = saved["schedule"].get("warmup_steps")
        if config.total_steps() > config.schedule_steps:
            self.notices.append(describe_extension(config.schedule, config.schedule_steps, config.total_steps()))

    def _prepare_folder(self) -> None:
        """Create ``out``; remove temporary files that a killed run left; with ``--restart``, the old run's
        files (rank 0, before any rank reads the folder)."""
        run_folder.check_out(self.out, create=True)
        stale = run_folder.remove_stale_temporaries(self.out)
        if stale:
            self.notices.append(f"removed {len(stale)} unfinished temporary file(s) of a killed run: "
                                f"{', '.join(p.name for p in stale)}.")  # fmt: skip
        if self.config.restart:
            removed = run_folder.clear_run(self.out)
            if removed:
                self.notices.append(f"--restart: removed the earlier run's {', '.join(removed)} from {self.out}.")

    def _write_settings(self) -> None:
        """Write the configuration (``config.json``)."""
        self.processes.barrier()  # every rank has looked before rank 0 writes
        if self.is_main:
            record = {"config": dataclasses.asdict(self.config), "identity": self.identity(), "argv": sys.argv}
            if self.processes.describe():
                record["processes"] = self.processes.describe()
            _write_json(self.out / CONFIG_NAME, record)

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> TrainingState:
        return TrainingState(self.model, self.optimizer, self.scheduler)

    def _position(self) -> dict[str, Any]:
        return {
            "identity": json.dumps(self.identity()),
            "step": self.step,
            "tokens": self.tokens,
            "microbatch": self.step * self.config.grad_accum,
        }

    def _unsharded_copy(self) -> TrainingState:
        """A single-process model, optimizer and scheduler of this run (to convert its checkpoint)."""
        model = self._build_model()
        optimizer = opt_lib.build(model, self.config.optimizer, self.hparams)
        peak = float(self.hparams["lr"])
        schedule = build_scheduler(optimizer, self.schedule_config, self.config.schedule_length(), peak)
        return TrainingState(model, optimizer, schedule)

    def _resume(self) -> None:
        """Continue from the checkpoint in ``out`` (after checking that it belongs to this configuration)."""
        position = self.checkpoint.load(self._state(), self._position(), self.identity(), self._unsharded_copy)
        self.step = int(position["step"])
        self.tokens = int(position["tokens"])
        if self.is_main:
            truncate_after(self.out / METRICS_NAME, self.step, self.config.eval_every)
        self.processes.barrier()

    def _save(self) -> None:
        self.checkpoint.save(self._state(), self._position())

    # ------------------------------------------------------------------ one step

    def _microbatch(self, index: int, *, count_tokens: bool) -> torch.Tensor:
        """This rank's share of the step's ``index``-th microbatch, on the device."""
        inputs = self.train_batches.batch(self.step * self.config.grad_accum + index)
        if count_tokens:
            self.tokens += inputs.numel()
        return self.processes.local_rows(inputs).to(self.device, non_blocking=True)

    def _gradients(self, *, count_tokens: bool) -> torch.Tensor:
        """Gradients of this step's microbatches at the current parameters; the mean loss over the ranks."""
        loss = self.train_step.gradients(lambda index: self._microbatch(index, count_tokens=count_tokens))
        return self.processes.mean(loss)

    def _clip(self) -> torch.Tensor:
        """Clip the gradient to ``--clip`` (the global norm over all shards); the norm before clipping."""
        return self.processes.clip_grad_norm(self.model.parameters(), self.config.clip)

    def _closure(self) -> torch.Tensor:
        """For optimizers with ``needs_closure``: the same minibatch's loss and (clipped) gradients at the
        parameters the optimizer has set, as often as it asks."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._gradients(count_tokens=False)
        if self.config.clip:
            self._clip()
        return loss

    def _train_step(self) -> tuple[float, float | None, float]:
        """One optimizer step over ``grad_accum`` microbatches; returns (loss, grad norm, lr used)."""
        loss = self._gradients(count_tokens=True).item()
        offloaded = self.config.offload != "none"  # the optimizer clips, and has stepped in backward
        grad_norm = float(self._clip()) if self.config.clip and not offloaded else None
        lr = float(self.optimizer.param_groups[0]["lr"])
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
            self._stop_non_finite(loss, grad_norm, lr)
        self.train_step.update(self._closure if getattr(self.optimizer, "needs_closure", False) else None)
        if offloaded and self.config.clip:
            grad_norm = self.optimizer.last_grad_norm
            if not math.isfinite(grad_norm):
                self._stop_non_finite(loss, grad_norm, lr)
        self.step += 1
        return loss, grad_norm, lr

    def _stop_non_finite(self, loss: float, grad_norm: float | None, lr: float) -> None:
        what = f"the loss is {loss}"
        if math.isfinite(loss):  # the gradient is what overflowed (its norm is known: clipping is on)
            what = f"the loss is {loss:.4g} but the gradient norm is {grad_norm}"
        raise NonFiniteLossError(
            f"step {self.step + 1}: {what}; the run stopped before updating the model with it. "
            f"{self.checkpoint.last_good()} Start a new run (another --out, or --restart here) with "
            f"{divergence_advice(self.config, lr)}."
        )

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean next-token loss over the fixed validation batches (split over the ranks)."""
        self.model.eval()
        total, count = 0.0, 0
        for batch in self.val_inputs:
            inputs, weight = self.processes.eval_rows(batch)
            inputs = inputs.to(self.device, non_blocking=True)
            with self.train_step.autocast():
                loss = causal_lm_loss(self.model, inputs)
            total += float(loss) * weight
            count += weight
        self.model.train()
        total, count = self.processes.total(torch.tensor([total, count], dtype=torch.float64)).tolist()
        return total / count

    # ------------------------------------------------------------------ the run

    def run(self) -> TrainResult:
        """Train until a limit is reached, then evaluate, checkpoint and return the result."""
        config = self.config
        if self.is_main:
            self._prepare_folder()
            if not config.quiet:
                for notice in self.notices:
                    print(f"memopt train: {notice}", file=sys.stderr)
        self.processes.barrier()
        if config.resume:
            self._resume()
        self._write_settings()
        self.model.train()
        writer = MetricsWriter(self.out / METRICS_NAME) if self.is_main else _NoMetrics()
        self._started = time.perf_counter()
        self._report("start")
        timed_out = False
        try:
            while self.step < self.total_steps:
                if config.max_time is not None and self.processes.agree(self._elapsed() >= config.max_time):
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
                        "elapsed": self._elapsed(),
                    }
                )
                self._report("train", loss=loss, tokens_per_s=tokens_per_s)
                if self._due(config.eval_every) or self.step == self.total_steps:
                    self._log_eval(writer)
                if config.save_checkpoints and (self._due(config.save_every) or self.step == self.total_steps):
                    self._save()
            if timed_out:  # stopped early: evaluate and checkpoint where it stands, so --resume continues
                if not self.processes.from_main(self._has_eval_at(self.step) if self.is_main else None):
                    self._log_eval(writer)
                if config.save_checkpoints:
                    self._save()
        finally:
            self._report("end")
            writer.close()
        return self._result("max_time" if timed_out else self._step_limit())

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _report(self, event: str, **values: float) -> None:
        """Call the progress hooks (rank 0 reports for all)."""
        if not self.is_main:
            return
        progress = Progress(
            event, self.config.optimizer, self.step, self.total_steps, self.tokens, self._elapsed(), **values
        )
        for hook in self.progress_hooks:
            hook(progress)

    def _log_eval(self, writer: MetricsWriter | _NoMetrics) -> None:
        began = time.perf_counter()
        val_loss = self.evaluate()
        writer.write(
            {
                "event": "eval",
                "step": self.step,
                "tokens": self.tokens,
                "val_loss": val_loss,
                "val_ppl": perplexity(val_loss),
                "eval_time": time.perf_counter() - began,
            }
        )
        self._report("eval", val_loss=val_loss)

    def _has_eval_at(self, step: int) -> bool:
        return any(r.get("event") == "eval" and r["step"] == step for r in read_metrics(self.out / METRICS_NAME))

    def _step_limit(self) -> str:
        """Which flag set the step count: ``max_tokens`` when it binds, else ``max_steps``."""
        config = self.config
        if config.max_tokens is not None and (
            config.max_steps is None or math.ceil(config.max_tokens / config.tokens_per_step) <= config.max_steps
        ):
            return "max_tokens"
        return "max_steps"

    def _result(self, stopped_by: str) -> TrainResult:
        """The run's result (``result.json``); under torchrun the state bytes of every rank, and their sum."""
        per_rank = self.processes.state_bytes_per_rank(self.optimizer)
        self.processes.barrier()  # rank 0 has written every metric
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
            state_bytes=sum(per_rank),
            num_params=self.num_params,
            median_step_time=median,
            tokens_per_s=self.config.tokens_per_step / median if median else None,
            out=str(self.out),
        )
        if self.processes.describe():
            result.extra.update(state_bytes_per_rank=per_rank, **self.processes.describe())
        if self.is_main:
            _write_json(self.out / RESULT_NAME, dataclasses.asdict(result))
        return result


class _NoMetrics:
    """The metrics writer of ranks other than 0: rank 0 alone writes ``metrics.jsonl``."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` as indented JSON, atomically."""
    text = json.dumps(json_safe(record), indent=2, default=str)
    atomic_write_bytes(path, lambda file: file.write(text.encode()))


def divergence_advice(config: TrainConfig, lr: float) -> str:
    """What may stop a run from diverging, for its settings: a lower rate always; clipping only where it is
    off or looser than 1.0, a longer warm-up where clipping is on; fp32 where it ran under bf16 autocast."""
    remedies = [f"a lower --lr (this one had lr {lr:g} at this step, optimizer {config.optimizer})"]
    if not config.clip:
        remedies.append("gradient clipping (--clip 1.0)")
    elif config.clip > 1.0:
        remedies.append(f"tighter gradient clipping (--clip 1.0; this run clips at {config.clip:g})")
    else:
        warmup = config.schedule_config().warmup_steps
        remedies.append(f"a longer warm-up (--warmup-steps {max(2 * warmup, 10)}; this run warms up for {warmup})")
    if config.dtype == "bf16":
        remedies.append("fp32 arithmetic (--dtype fp32)")
    return ", or ".join(remedies)


def perplexity(loss: float) -> float:
    """``exp(loss)``; infinite where that overflows a float (a diverged run), NaN for a NaN loss."""
    if math.isnan(loss):
        return math.nan
    return math.exp(loss) if loss < 709.0 else math.inf


def _saved_identity(out: Path) -> dict[str, Any] | None:
    """The identity recorded in ``out``'s ``config.json`` (None if absent or unreadable)."""
    try:
        return json.loads((out / CONFIG_NAME).read_text())["identity"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def train(config: TrainConfig, data: PreparedData | None = None) -> TrainResult:
    """Run (or resume) the training described by ``config``; see :class:`Trainer`."""
    return Trainer(config, data).run()
