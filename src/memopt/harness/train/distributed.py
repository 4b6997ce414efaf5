"""The processes of a run: :class:`SingleProcess` for one, :class:`Distributed` for a ``torchrun`` launch.

Both have one interface (rank, world size, device, wrapping the model, each rank's share of a batch,
gradient synchronization, collectives on numbers, running something on rank 0), so the training loop is
written once: in a single process the collectives are identities and the model is not wrapped.
:func:`launch` returns the one that applies.

A run launched by ``torchrun`` joins a process group and trains one model with DDP or FSDP2, on the same
command line as a single process.

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
from memopt.harness.train import optimizers as opt_lib
from memopt.harness.train.choices import PARALLEL, check_choice
from memopt.harness.train.errors import ConfigError, HarnessError
from memopt.state.accounting import state_bytes_per_rank

T = TypeVar("T")


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(name: str) -> torch.device:
    """The device of a single-process run: ``"auto"`` is the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: not a device ({exc}); use auto, cpu or cuda[:N].") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu.")
    return device


class SingleProcess:
    """The processes of a run in one process: rank 0 of 1, the interface of :class:`Distributed` with
    identities for its collectives, the model unwrapped and every batch whole."""

    rank = 0
    world_size = 1
    parallel = None
    is_main = True

    def __init__(self, device: torch.device):
        self.device = device

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` itself."""
        return model

    def local_rows(self, batch: torch.Tensor) -> torch.Tensor:
        """The whole training microbatch."""
        return batch

    def eval_rows(self, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The whole validation batch, and its size as its weight."""
        return batch, batch.shape[0]

    def gradient_sync(self, model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
        """Nothing to synchronize."""
        return contextlib.nullcontext()

    def clip_grad_norm(self, parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Clip the gradients to a norm of ``max_norm``; the norm before clipping."""
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def total(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (a new tensor): the sum over one rank."""
        return values.detach().clone()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """``value``: the mean over one rank."""
        return value

    def agree(self, flag: bool) -> bool:
        """``flag``."""
        return flag

    def barrier(self) -> None:
        """Nothing to wait for."""

    def from_main(self, value: Any) -> Any:
        """``value``: this process is rank 0."""
        return value

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()``."""
        return fn()

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()``."""
        return fn()

    def state_bytes_per_rank(self, optimizer: torch.optim.Optimizer) -> list[int]:
        """The optimizer's state bytes, as a list of one."""
        return [opt_lib.state_bytes(optimizer)]

    def describe(self) -> dict[str, Any]:
        """What a run's files record about its processes: nothing for one."""
        return {}

    def finish(self) -> None:
        """Nothing to close."""


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

    def clip_grad_norm(self, parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Clip the gradients to a global norm of ``max_norm`` over all shards (:func:`clip_grad_norm`)."""
        return clip_grad_norm(parameters, max_norm)

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

    def finish(self) -> None:
        """The end of a run that went well: every rank waits for the others, then the process group that
        :func:`launch` created is destroyed while the interpreter is fully alive (PyTorch asks for it before
        exit; left to interpreter shutdown, gloo's threads may outlive the objects they use)."""
        dist.barrier()
        _destroy()

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a decision only rank 0 can take, e.g. from its files)."""
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on every rank, rank 0 first (e.g. rank 0 tokenizes into the cache, then the others read it)."""
        result = self.on_main(fn)
        return result if self.is_main else fn()

    def state_bytes_per_rank(self, optimizer: torch.optim.Optimizer) -> list[int]:
        """The optimizer's state bytes on every rank (a collective)."""
        return state_bytes_per_rank(optimizer)

    def describe(self) -> dict[str, Any]:
        """What a run's files record about its processes."""
        return {"world_size": self.world_size, "parallel": self.parallel}

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


Processes = SingleProcess | Distributed


def launch(device_flag: str, parallel: str) -> Processes:
    """Join the process group of a torchrun launch; in a single process, its stand-in on ``device_flag``.

    The group is created here unless the caller created one already (then it is reused); NCCL when
    training on CUDA, gloo otherwise. A process group created here is destroyed at exit.
    """
    if not launched():
        return SingleProcess(resolve_device(device_flag))
    check_choice("--parallel", parallel, PARALLEL)
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
        _CREATED.append(dist.group.WORLD)
        atexit.register(_destroy)
    return Distributed(dist.get_rank(), dist.get_world_size(), device, parallel)


#: the process group :func:`launch` created (destroyed by :func:`_destroy`; a caller's own group is left alone)
_CREATED: list = []


def _destroy() -> None:
    if _CREATED and dist.is_initialized():
        dist.destroy_process_group()
    _CREATED.clear()


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
