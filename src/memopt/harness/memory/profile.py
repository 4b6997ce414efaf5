"""Profile training steps: build the model with its techniques, run steps under the tracker, report.

One routine serves both modes. ``fake=True`` (estimate) runs it under ``FakeTensorMode``: every tensor has
its real shape, dtype and device but no data, so a LLaMA-7B step is planned in seconds on a laptop, and the
kernels chosen are those of the target device (e.g. the fused attention of the CPU or CUDA backend).
``fake=False`` (measure) runs it on real tensors of the device. In both, the steps are those of the harness,
run by the same :class:`memopt.harness.train.step.TrainStep`: ``microbatches`` forwards and backwards of
``batch_size / microbatches`` samples, one optimizer step, ``zero_grad(set_to_none=True)``. Two steps are
profiled by default: the first creates the optimizer state (and, for Subspace-Momentum, computes the first
projection), the second is the steady state with the state resident; the peak is over both.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

from memopt.harness.memory.breakdown import MemoryBreakdown
from memopt.harness.memory.sparsity import prune_model
from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.tracker import LiveTensorTracker
from memopt.harness.memory.workloads import Workload
from memopt.harness.train import optimizers as opt_lib
from memopt.harness.train.errors import ConfigError
from memopt.harness.train.step import TrainStep
from memopt.state.accounting import state_bytes
from memopt.wrappers.master_weights import MasterWeightOptimizer, master_copy


def prepare_model(workload: Workload, techniques: Techniques) -> tuple[nn.Module, nn.Module | None]:
    """Build the workload's model with ``techniques`` applied: pruning, checkpointing, precision.

    Returns:
        (model, master): ``master`` is the float32 master copy for ``bf16-master``, else None.
    """
    model = workload.build()
    if techniques.sparsity:
        prune_model(model, techniques.sparsity, techniques.sparse_storage)
    if techniques.checkpointing:
        workload.enable_checkpointing(model)
    master = master_copy(model) if techniques.precision == "bf16-master" else None
    cast_floating(model, techniques.param_dtype)
    return model, master


def cast_floating(model: nn.Module, dtype: torch.dtype) -> None:
    """Hold ``model``'s floating-point parameters and buffers in ``dtype``, in place; shared tensors stay
    shared. Unlike ``Module.to`` this replaces the tensors instead of swapping them, which fake tensors
    do not allow."""
    done: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is None or not tensor.is_floating_point() or tensor.dtype == dtype:
                    continue
                if id(tensor) not in done:
                    converted = tensor.detach().to(dtype)
                    if isinstance(tensor, nn.Parameter):
                        converted = nn.Parameter(converted, requires_grad=tensor.requires_grad)
                    done[id(tensor)] = converted
                table[name] = done[id(tensor)]


def build_optimizer(
    model: nn.Module, master: nn.Module | None, name: str, hparams: dict[str, Any], techniques: Techniques
) -> torch.optim.Optimizer:
    """The optimizer ``name`` with ``hparams`` (and the precision's, e.g. stochastic rounding), wrapped
    around float32 masters for ``bf16-master``.

    Raises:
        ConfigError: the registry rejects the name or a hyperparameter.
    """
    hparams = {**hparams, **techniques.optimizer_hparams()}
    if master is not None:
        return MasterWeightOptimizer(model, master, lambda m: opt_lib.build(m, name, hparams))
    return opt_lib.build(model, name, hparams)


def resolve_device(name: str, fake: bool) -> torch.device:
    """The device to run on; measuring on CUDA needs a GPU, estimating for CUDA a CUDA build of torch.

    Raises:
        ConfigError: not a device, or CUDA is absent for a measurement.
    """
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: not a device ({exc}); use cpu or cuda[:N].") from exc
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: the planner runs on cpu or cuda.")
    if device.type == "cuda" and not fake and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available to measure on; use --mode estimate or --device cpu.")
    if device.type == "cuda" and fake and not torch.backends.cuda.is_built():
        raise ConfigError(
            f"--device {name}: this torch build has no CUDA support, so it cannot make fake CUDA tensors; "
            "estimate with --device cpu (the same tensors, only the attention kernel may differ)."
        )
    return device


def profile(
    workload: Workload,
    optimizer: str = "adamw",
    hparams: dict[str, Any] | None = None,
    *,
    batch_size: int = 8,
    techniques: Techniques | None = None,
    device: str = "cpu",
    fake: bool = True,
    steps: int = 2,
    seed: int = 0,
    snapshot: str | None = None,
) -> MemoryBreakdown:
    """Profile ``steps`` training steps of ``workload`` (see the module docstring).

    Args:
        workload: the model, its batches and its loss.
        optimizer: a registry name; ``hparams`` override its recommended hyperparameters (and the
            harness's size rule: a subspace ``rank`` of ``hidden_size // 4``).
        batch_size: samples per optimizer step, split into ``techniques.microbatches`` microbatches.
        techniques: what to apply (default: none).
        device: where to run (measure) or what to plan for (estimate).
        fake: estimate with fake tensors (True) or measure on real ones (False).
        steps: optimizer steps to run (at least 1).
        seed: seeds the model's initialisation and the random batches.
        snapshot: CUDA measure only: write the allocator's memory snapshot (``torch.cuda.memory``) here.

    Raises:
        ConfigError: bad batch, microbatches, precision, sparsity, optimizer or device.
    """
    techniques = techniques or Techniques()
    techniques.validate(batch_size)
    if steps < 1:
        raise ConfigError(f"--steps {steps}: profile at least one step.")
    opt_lib.check_name(optimizer)
    dev = resolve_device(device, fake)
    hidden = workload.info.get("hidden_size")
    resolved = opt_lib.resolve_hparams(optimizer, hparams or {}, None, hidden)
    cuda = dev.type == "cuda" and not fake
    began = time.perf_counter()
    torch.manual_seed(seed)
    with _fake_tensors() if fake else contextlib.nullcontext(), torch.device(dev):
        model, master = prepare_model(workload, techniques)
        opt = build_optimizer(model, master, optimizer, resolved, techniques)
        model.train()
        if cuda:
            torch.cuda.synchronize(dev)
            base = torch.cuda.memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            if snapshot:
                torch.cuda.memory._record_memory_history(max_entries=200_000)
        tracker = LiveTensorTracker()
        with tracker:
            tracker.track(model.parameters(), "parameters")
            tracker.track(model.buffers(), "buffers")
            if master is not None:
                tracker.track(master.parameters(), "master_weights")
            handles = tracker.watch_gradients(model.parameters())
            step = TrainStep(
                model,
                opt,
                workload.loss,
                dev,
                microbatches=techniques.microbatches,
                bf16_autocast=techniques.autocast,
                watch_forward=tracker.saving,
                after_optimizer_step=tracker.mark_optimizer_state,
            )
            micro = batch_size // techniques.microbatches
            try:
                for _ in range(steps):
                    step(lambda _index: workload.batch(micro, dev))
            finally:
                for handle in handles:
                    handle.remove()
        allocator_peak = None
        if cuda:
            torch.cuda.synchronize(dev)
            allocator_peak = torch.cuda.max_memory_allocated(dev) - base + _model_bytes(tracker)
            if snapshot:
                torch.cuda.memory._dump_snapshot(snapshot)
                torch.cuda.memory._record_memory_history(enabled=None)
    summary = tracker.summary()
    components = dict(summary.maximum)
    # optimizer state as memopt.state_bytes counts it: its tensors, plus the Python step counters that no
    # storage holds (8 bytes each); the peak counts tensors only. A state tensor that is a view of a larger
    # tensor keeps all of that storage alive: the tracker's figure (state_storage) is what is really held.
    components["optimizer_state"] = state_bytes(opt)
    config = {
        "workload": workload.name,
        "model": workload.info,
        "optimizer": optimizer,
        "hparams": resolved,
        "batch_size": batch_size,
        "techniques": techniques.to_dict(),
        "steps": steps,
        "num_params": sum(p.numel() for p in model.parameters()),
    }
    return MemoryBreakdown(
        components=components,
        at_peak=summary.at_peak,
        peak=summary.peak,
        mode="estimate" if fake else "measure",
        device=str(dev),
        allocator_peak=allocator_peak,
        state_storage=summary.maximum["optimizer_state"],
        config=config,
        seconds=time.perf_counter() - began,
    )


def _fake_tensors() -> contextlib.ExitStack:
    """``FakeTensorMode``, with real constants above it (:class:`_RealConstants`). The constants that the
    optimizers compute once and cache (the 8-bit code maps) are computed for real first, so that a fake
    tensor is never cached for later real runs."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from memopt.state import quantization

    for signed in (True, False):
        quantization.dynamic_map(signed), quantization.nearest_code_table(signed)
    stack = contextlib.ExitStack()
    stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
    stack.enter_context(_RealConstants())
    return stack


class _RealConstants(TorchDispatchMode):
    """Above a fake mode: an operator whose tensor inputs are all real (a cached constant such as an
    8-bit code map) runs on the real tensors, so that code may read its result (``int(...)``)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch._subclasses.fake_tensor import FakeTensor

        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if tensors and not any(isinstance(t, FakeTensor) for t in tensors):
            with _disable_current_modes():
                return func(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def _model_bytes(tracker: LiveTensorTracker) -> int:
    """What was resident before the steps began (model, buffers, masters): the allocator's peak is
    measured above it, the tracker's includes it."""
    summary = tracker.summary()
    return sum(summary.maximum[k] for k in ("parameters", "buffers", "master_weights"))


def technique_savings(
    workload: Workload, breakdown: MemoryBreakdown, techniques: Techniques, **kwargs: Any
) -> dict[str, int]:
    """Bytes of peak each technique in ``techniques`` (and a non-AdamW optimizer) saves: the peak of the
    same run without it, less ``breakdown.peak``. ``kwargs`` are :func:`profile`'s other arguments."""
    savings = {}
    for name in techniques.changes():
        if name == "sparse_storage":
            continue
        without = techniques.without(name)
        if name == "sparsity":
            without = without.without("sparse_storage")
        label = {
            "microbatches": f"microbatches {techniques.microbatches}",
            "sparsity": f"sparsity {techniques.sparsity:g}",
        }
        other = profile(workload, techniques=without, **kwargs)
        savings[label.get(name, name if name != "precision" else techniques.precision)] = other.peak - breakdown.peak
    if kwargs.get("optimizer", "adamw") != "adamw":
        base = profile(workload, techniques=techniques, **{**kwargs, "optimizer": "adamw", "hparams": {}})
        savings[f"{kwargs['optimizer']} (vs adamw)"] = base.peak - breakdown.peak
    return savings


def estimate(workload: Workload, optimizer: str = "adamw", hparams: dict[str, Any] | None = None, **kwargs: Any):
    """:func:`profile` with fake tensors: allocates nothing (the planner's estimate mode)."""
    return profile(workload, optimizer, hparams, fake=True, **kwargs)


def measure(workload: Workload, optimizer: str = "adamw", hparams: dict[str, Any] | None = None, **kwargs: Any):
    """:func:`profile` on real tensors of ``device``; on CUDA also the allocator's peak (measure mode)."""
    return profile(workload, optimizer, hparams, fake=False, **kwargs)
