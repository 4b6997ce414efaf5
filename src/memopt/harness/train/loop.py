"""The training loop: one model, one optimizer, one dataset; metrics, evaluation and checkpoints.

Read :meth:`Trainer.run` top to bottom: each step takes ``grad_accum`` microbatches (batch ``k`` of the run
is fixed by the seed), averages their loss, clips the gradient norm, checks that loss and gradient are
finite, steps the optimizer and the LR scheduler, and logs one JSON line. Every ``eval_every`` steps the
model is evaluated on a fixed set of validation batches; every ``save_every`` steps (and at the end) a
checkpoint is written atomically. On CPU a resumed run is bit-identical to an uninterrupted one.

Launched by ``torchrun`` with several processes, the same loop trains with DDP or FSDP2 and writes
distributed checkpoints (:mod:`memopt.harness.train.distributed`, :mod:`memopt.harness.train.sharded_checkpoint`).
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

from memopt.harness.memory.techniques import Techniques, enable_activation_checkpointing
from memopt.harness.train import checkpoint as ckpt
from memopt.harness.train import distributed, models, sharded_checkpoint
from memopt.harness.train import optimizers as opt_lib
from memopt.harness.train.config import TrainConfig
from memopt.harness.train.data import PreparedData, TokenBatches, check_sizes, prepare_data
from memopt.harness.train.errors import CheckpointError, ConfigError, NonFiniteLossError
from memopt.harness.train.metrics import METRICS_NAME, MetricsWriter, read_metrics, truncate_after
from memopt.harness.train.schedule import build_scheduler
from memopt.state.accounting import state_bytes_per_rank

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
    """The :class:`memopt.harness.memory.techniques.Techniques` of a run (for the parts that change the model)."""
    return Techniques(
        microbatches=config.grad_accum,
        checkpointing=config.activation_checkpointing,
        precision=config.param_dtype,
        sparsity=config.sparsity,
    )


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
        # under torchrun: join the process group (None in a single process)
        self.dist = distributed.launch(config.device, config.parallel)
        if data is None and self.dist is not None:  # rank 0 tokenizes into the cache, the others then read it
            self.dist.on_main(lambda: prepare_data(config.data_config()))
        self.data = data if data is not None else prepare_data(config.data_config())
        check_sizes(self.data, config.seq_len, config.batch_size)
        self.device = self.dist.device if self.dist else resolve_device(config.device)
        self.bf16 = resolve_bf16(config.dtype, self.device)

        self.model_config = models.model_config(
            config.preset, config.model_config, self.data.vocab_size, config.seq_len
        )
        self.model = models.build_model(self.model_config, config.seed).to(self.device)
        if config.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        self.techniques = memory_techniques(config)
        self.num_params = models.count_parameters(self.model)
        if self.dist is not None:
            self.dist.local_rows(torch.zeros(config.batch_size, 1))  # --batch-size must split over the ranks
            self.model = self.dist.wrap(self.model)
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

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (always in a single process; rank 0 under torchrun)."""
        return self.dist is None or self.dist.is_main

    def _barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()

    # ------------------------------------------------------------------ setup helpers

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """Apply the memory techniques that change the parameters (sparsity, bf16 parameters and their
        master copy), then build the optimizer over them."""
        from memopt.harness.memory.profile import build_optimizer, cast_floating
        from memopt.harness.memory.sparsity import prune_model
        from memopt.wrappers.master_weights import master_copy

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
            names = (ckpt.CHECKPOINT_NAME, sharded_checkpoint.POINTER_NAME, METRICS_NAME, CONFIG_NAME)
            taken = [n for n in names if (self.out / n).exists()]
            if taken:
                raise ConfigError(
                    f"--out {self.out}: the folder already holds a run ({', '.join(taken)}). Continue it "
                    "with --resume, or choose another --out; nothing was changed."
                )
        self._barrier()  # every rank has looked before rank 0 writes
        if self.is_main:
            record = {"config": dataclasses.asdict(self.config), "identity": self.identity(), "argv": sys.argv}
            if self.dist is not None:
                record["processes"] = {"world_size": self.dist.world_size, "parallel": self.dist.parallel}
            text = json.dumps(record, indent=2, default=str)
            ckpt.atomic_write_bytes(self.out / CONFIG_NAME, lambda f: f.write(text.encode()))

    def _check_identity(self, saved_identity: str, path: Path) -> None:
        differences = ckpt.identity_diff(json.loads(saved_identity), self.identity())
        if differences:
            raise CheckpointError(
                f"--resume: {path} was made by another configuration:\n  "
                + "\n  ".join(differences)
                + f"\nRerun with the original settings (saved in {self.out / CONFIG_NAME}), or start a new "
                "run with another --out; the checkpoint was not changed."
            )

    def _load_single_process_checkpoint(self, model, optimizer, scheduler) -> dict[str, Any]:
        """Load ``checkpoint.pt`` into ``model``, ``optimizer``, ``scheduler`` and the RNG; its position."""
        path = self.out / ckpt.CHECKPOINT_NAME
        payload = ckpt.load_checkpoint(path, trust=self.config.trust_checkpoint)
        self._check_identity(payload["identity"], path)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        ckpt.set_rng_state(payload["rng"])
        return {k: payload[k] for k in ("identity", "step", "tokens", "microbatch")}

    def _unsharded_copy(self) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
        """A single-process model, optimizer and scheduler of this run (to convert its checkpoint)."""
        model = models.build_model(self.model_config, self.config.seed)
        optimizer = opt_lib.build(model, self.config.optimizer, self.hparams)
        peak = float(self.hparams["lr"])
        schedule = build_scheduler(optimizer, self.schedule_config, self.config.schedule_length(), peak)
        return model, optimizer, schedule

    def _restore(self) -> None:
        """Load the checkpoint in ``out`` and check that it belongs to this configuration.

        ``checkpoint.pt`` (a single-process run) or the DCP checkpoint (a torchrun run), whichever is newer;
        either loads on any number of processes.
        """
        in_dcp = sharded_checkpoint.latest_is_distributed(self.out)
        if self.dist is None and not in_dcp:
            position = self._load_single_process_checkpoint(self.model, self.optimizer, self.scheduler)
        else:
            if not in_dcp:  # a single-process checkpoint resumed on several processes: convert it first

                def convert() -> None:
                    model, optimizer, schedule = self._unsharded_copy()
                    meta = self._load_single_process_checkpoint(model, optimizer, schedule)
                    state = sharded_checkpoint.training_state(model, optimizer, schedule, meta)
                    sharded_checkpoint.save(self.out, int(meta["step"]), state, is_main=True, no_dist=True)

                self.dist.on_main(convert)
            no_dist = self.dist is None
            meta = sharded_checkpoint.load(self.out, {"meta": self._position()}, no_dist=no_dist)["meta"]
            self._check_identity(meta["identity"], self.out / sharded_checkpoint.POINTER_NAME)
            self.optimizer.prepare_state()  # the template that the checkpoint is loaded into
            template = sharded_checkpoint.training_state(self.model, self.optimizer, self.scheduler, meta)
            state = sharded_checkpoint.load(self.out, template, no_dist=no_dist)
            sharded_checkpoint.restore(self.model, self.optimizer, self.scheduler, state)
            position = state["meta"]
        self.step = int(position["step"])
        self.tokens = int(position["tokens"])
        if self.is_main:
            truncate_after(self.out / METRICS_NAME, self.step, self.config.eval_every)
        self._barrier()

    def _position(self) -> dict[str, Any]:
        return {
            "identity": json.dumps(self.identity()),
            "step": self.step,
            "tokens": self.tokens,
            "microbatch": self.step * self.config.grad_accum,
        }

    def _save(self) -> None:
        if self.dist is not None:
            state = sharded_checkpoint.training_state(self.model, self.optimizer, self.scheduler, self._position())
            sharded_checkpoint.save(self.out, self.step, state, is_main=self.is_main)
            return
        ckpt.save_checkpoint(
            self.out / ckpt.CHECKPOINT_NAME,
            {
                **self._position(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": ckpt.rng_state(),
            },
        )
        sharded_checkpoint.discard(self.out)  # checkpoint.pt is the run's latest now

    # ------------------------------------------------------------------ the loop

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _forward_backward(self, *, count_tokens: bool) -> torch.Tensor:
        """Gradients of this step's ``grad_accum`` microbatches at the current parameters; the mean loss."""
        accum = self.config.grad_accum
        total = torch.zeros((), device=self.device)
        for micro in range(accum):
            inputs = self.train_batches.batch(self.step * accum + micro)
            if count_tokens:
                self.tokens += inputs.numel()
            if self.dist is not None:  # this rank's share of the microbatch; gradients synchronized once a step
                inputs = self.dist.local_rows(inputs)
            inputs = inputs.to(self.device, non_blocking=True)
            with self._gradient_sync(last=micro == accum - 1):
                with self._autocast():
                    loss = self.model(input_ids=inputs, labels=inputs).loss
                (loss / accum).backward()
            total += loss.detach()
        mean = total / accum
        return self.dist.mean(mean) if self.dist is not None else mean

    def _gradient_sync(self, *, last: bool) -> contextlib.AbstractContextManager:
        if self.dist is None:
            return contextlib.nullcontext()
        return self.dist.gradient_sync(self.model, last)

    def _clip(self) -> torch.Tensor:
        """Clip the gradient to ``--clip`` (the global norm over all shards); the norm before clipping."""
        if self.dist is None:
            return torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        return distributed.clip_grad_norm(self.model.parameters(), self.config.clip)

    def _closure(self) -> torch.Tensor:
        """For optimizers with ``needs_closure``: the same minibatch's loss and (clipped) gradients at the
        parameters the optimizer has set, as often as it asks."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._forward_backward(count_tokens=False)
        if self.config.clip:
            self._clip()
        return loss

    def _train_step(self) -> tuple[float, float | None, float]:
        """One optimizer step over ``grad_accum`` microbatches; returns (loss, grad norm, lr used)."""
        loss_value = self._forward_backward(count_tokens=True).item()
        grad_norm = None
        if self.config.clip:
            grad_norm = float(self._clip())
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
            weight = inputs.shape[0]
            if self.dist is not None:  # the batch's sequences split over the ranks
                inputs, weight = self.dist.eval_rows(inputs)
            inputs = inputs.to(self.device, non_blocking=True)
            with self._autocast():
                loss = self.model(input_ids=inputs, labels=inputs).loss
            total += float(loss) * weight
            count += weight
        self.model.train()
        if self.dist is not None:
            total, count = self.dist.total(torch.tensor([total, count], dtype=torch.float64)).tolist()
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
        writer = MetricsWriter(self.out / METRICS_NAME) if self.is_main else _NoMetrics()
        bar = tqdm(
            total=self.total_steps,
            initial=min(self.step, self.total_steps),
            unit="step",
            dynamic_ncols=True,
            disable=config.quiet or not sys.stderr.isatty() or not self.is_main,
            desc=config.optimizer,
        )
        start = time.perf_counter()
        timed_out = False
        try:
            while self.step < self.total_steps:
                if config.max_time is not None and self._agree(time.perf_counter() - start >= config.max_time):
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
                if not self._from_main(self._has_eval_at(self.step) if self.is_main else None):
                    self._log_eval(writer, bar)
                if config.save_checkpoints:
                    self._save()
        finally:
            bar.close()
            writer.close()
        return self._result("max_time" if timed_out else self._step_limit())

    def _agree(self, flag: bool) -> bool:
        """``flag`` from this process, or true on all ranks if true on any (timings differ by rank)."""
        return self.dist.agree(flag) if self.dist is not None else flag

    def _from_main(self, value: Any) -> Any:
        return self.dist.from_main(value) if self.dist is not None else value

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

    def _log_eval(self, writer: MetricsWriter | _NoMetrics, bar: tqdm | None) -> None:
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
        """The run's result (``result.json``); under torchrun the state bytes of every rank, and their sum."""
        if self.dist is not None:
            per_rank = state_bytes_per_rank(self.optimizer)
        else:
            per_rank = [opt_lib.state_bytes(self.optimizer)]
        self._barrier()  # rank 0 has written every metric
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
        if self.dist is not None:
            result.extra.update(
                state_bytes_per_rank=per_rank, world_size=self.dist.world_size, parallel=self.dist.parallel
            )
        if self.is_main:
            text = json.dumps(dataclasses.asdict(result), indent=2, default=str)
            ckpt.atomic_write_bytes(self.out / RESULT_NAME, lambda f: f.write(text.encode()))
        return result


class _NoMetrics:
    """The metrics writer of ranks other than 0: rank 0 alone writes ``metrics.jsonl``."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def train(config: TrainConfig, data: PreparedData | None = None) -> TrainResult:
    """Run (or resume) the training described by ``config``; see :class:`Trainer`."""
    return Trainer(config, data).run()
