"""Data-parallel training on torch.distributed: a run launched by ``torchrun`` joins a process group and
trains one model with DDP or FSDP2, on the same command line as a single process.

What a distributed run does differently (everything else is the single-process loop):

* **process group**: from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...), NCCL
  when training on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU;
* **model**: ``--parallel fsdp`` (default) shards every parameter on dim 0 with FSDP2, one
  ``fully_shard`` unit per transformer block (the modules ``transformers`` lists in ``_no_split_modules``)
  and one for the rest; ``--parallel ddp`` replicates the model with ``DistributedDataParallel``;
* **data**: every microbatch is the single-process run's, and each rank takes its share of its sequences
  (``--batch-size`` must divide by the number of processes), so a step sees the same tokens as with one
  process and the averaged gradient is the same; gradients are synchronized on the last microbatch of a
  step only (``no_sync`` / ``set_requires_gradient_sync``);
* **clipping** uses the global gradient norm over all shards (:func:`clip_grad_norm`);
* **loss, evaluation and metrics**: losses are averaged over the ranks, the validation batches are split
  over them, and only rank 0 writes metrics, configuration, result and progress;
* **checkpoints**: ``torch.distributed.checkpoint`` (:mod:`memopt.harness.train.sharded_checkpoint`).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from memopt.harness.train import errors
from memopt.harness.train.errors import ConfigError, HarnessError

PARALLEL_CHOICES = ("fsdp", "ddp")
T = TypeVar("T")


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Distributed:
    """The process group of a launched run and how the model is replicated or sharded over it."""

    rank: int
    world_size: int
    device: torch.device
    parallel: str

    @property
    def is_main(self) -> bool:
        """Whether this process writes metrics, configuration and results (rank 0)."""
        return self.rank == 0

    # ------------------------------------------------------------------ model and data
    def wrap(self, model: nn.Module) -> nn.Module:
        """Shard ``model`` with FSDP2 (one unit per transformer block) or replicate it with DDP."""
        if self.parallel == "ddp":
            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        for block in transformer_blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model

    def local_rows(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's sequences of a training microbatch (an equal share of each)."""
        if batch.shape[0] % self.world_size:
            raise ConfigError(
                f"--batch-size {batch.shape[0]}: not divisible by the {self.world_size} processes; each takes an "
                f"equal share of every microbatch. Use a multiple of {self.world_size}."
            )
        share = batch.shape[0] // self.world_size
        return batch[self.rank * share : (self.rank + 1) * share]

    def eval_rows(self, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        """This rank's sequences of a validation batch and how many of them count: a rank left without
        any (a last batch smaller than the number of processes) still runs one, with weight 0, since
        FSDP2's forward is collective."""
        rows = torch.tensor_split(batch, self.world_size)[self.rank]
        return (rows, rows.shape[0]) if rows.shape[0] else (batch[:1], 0)

    @contextlib.contextmanager
    def gradient_sync(self, model: nn.Module, enabled: bool) -> Iterator[None]:
        """Synchronize gradients in this backward only if ``enabled`` (the last microbatch of a step)."""
        if isinstance(model, DistributedDataParallel) and not enabled:
            with model.no_sync():
                yield
            return
        if isinstance(model, FSDPModule):
            model.set_requires_gradient_sync(enabled)
        yield

    # ------------------------------------------------------------------ collectives on numbers
    def total(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (a new tensor)."""
        values = values.detach().clone().to(self.device)
        dist.all_reduce(values)
        return values

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over the ranks."""
        return self.total(value) / self.world_size

    def agree(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any (decisions taken from measured time)."""
        return bool(self.total(torch.tensor(int(flag))).item())

    def barrier(self) -> None:
        dist.barrier()

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a decision only rank 0 can take, e.g. from its files)."""
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` on rank 0 alone (writing files, converting a checkpoint); an error there is raised on
        every rank, so that no rank waits for rank 0 forever. Returns ``fn()`` on rank 0, None elsewhere."""
        result, failure, error = None, None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as exc:
                error = exc
                kind = type(exc).__name__ if isinstance(exc, HarnessError) else "HarnessError"
                failure = (kind, str(exc) if isinstance(exc, HarnessError) else f"rank 0 failed: {exc!r}")
        failure = self.from_main(failure)
        if failure is not None:
            if error is not None:
                raise error
            raise getattr(errors, failure[0], HarnessError)(failure[1])
        return result


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a ``transformers`` model (classes named in its ``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ConfigError(
            f"--parallel fsdp: cannot find the transformer blocks of {type(model).__name__} to shard one by one "
            "(it lists no _no_split_modules). Use --parallel ddp, or a transformers model that names its blocks."
        )
    return blocks


def launch(device_flag: str, parallel: str) -> Distributed | None:
    """Join the process group of a torchrun launch (None in a single process).

    The group is created here unless the caller created one already (then it is reused); NCCL when
    training on CUDA, gloo otherwise. A process group created here is destroyed at exit.
    """
    if not launched():
        return None
    if parallel not in PARALLEL_CHOICES:
        raise ConfigError(f"--parallel {parallel!r}: choose one of {', '.join(PARALLEL_CHOICES)}.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_flag.startswith("cuda") or (device_flag == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device_flag}: CUDA is not available on this machine; use --device cpu.")
        if device_flag not in ("auto", "cuda"):
            raise ConfigError(
                f"--device {device_flag}: under torchrun each process takes its own GPU (cuda:LOCAL_RANK); give "
                "--device cuda or auto, and choose the GPUs with CUDA_VISIBLE_DEVICES."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device_flag in ("auto", "cpu"):
        device = torch.device("cpu")
    else:
        raise ConfigError(f"--device {device_flag!r}: use auto, cpu or cuda.")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
        atexit.register(_destroy)
    return Distributed(dist.get_rank(), dist.get_world_size(), device, parallel)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip gradients to a global norm of ``max_norm`` and return the norm before clipping.

    With FSDP2 every gradient is a DTensor shard, and each rank's norm is a partial one: the total is
    combined over the ranks (``full_tensor``) before clipping, so every rank scales by the same factor.
    """
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total
