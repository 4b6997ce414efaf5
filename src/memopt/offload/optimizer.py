"""An engine optimizer whose state lives off the parameters' device, stepped parameter by parameter during
the backward pass.

**Where things live.** The inner optimizer (any :class:`~memopt.optim.engine.MemoptOptimizer`, in any state
format: plain, bfloat16, 8-bit, 4-bit) is built for :func:`~memopt.offload.host.host_view` of the model, so
its state is created on the host: with ``to="cpu"`` it stays in host memory; with ``to="disk"`` each
parameter's state (and the float32 master of a 16-bit or CUDA parameter) is in a file under ``path``, and
only a window of it is in memory (:mod:`memopt.offload.disk`).

**When a parameter steps.** A post-accumulate-grad hook (``Tensor.register_post_accumulate_grad_hook``, as in
torchao's ``CPUOffloadOptimizer`` and PyTorch's "optimizer step in backward" recipe) fires when a parameter's
gradient of a backward pass is complete. With ``accumulation_steps=k`` the first ``k - 1`` calls do nothing
(gradients accumulate as usual); the ``k``-th moves the gradient to the host and, unless clipping is on,
steps that parameter at once, so that its update overlaps the rest of the backward pass, and frees its
gradient. ``step()`` then steps whatever has not been stepped (a parameter unused in the last microbatch,
the groups below), waits for the disk and the copies back to the device, and records the backward order
that the next step's prefetching follows.

**Clipping rule** (``max_grad_norm``): the global norm needs every gradient, so with clipping the hooks only
move gradients to the host; ``step()`` computes the global 2-norm of all gradients (in the model's parameter
order, :func:`torch.nn.utils.get_total_norm`), multiplies each gradient by ``min(1, max_grad_norm /
(norm + 1e-6))`` (``torch.nn.utils.clip_grad_norm_``'s rule, so that results equal clipping the model's
gradients then calling the plain optimizer), then steps every parameter in backward order. The norm before
clipping is ``last_grad_norm``.

A group whose second-moment estimator reads all the group's gradients before its first update
(AdaGrad-Norm, :meth:`~memopt.optim.engine.MemoptOptimizer.needs_whole_group`) is stepped whole in ``step()``,
its state all in memory at once.

**Checkpoints.** ``state_dict()`` equals the plain optimizer's (float32 or float64 CPU parameters), or
:class:`~memopt.wrappers.MasterWeightOptimizer`'s ``{"inner", "masters"}`` when masters exist, so a run may
switch offloading on or off across a resume. On the disk tier it reads every parameter's state into memory
(as a checkpoint must hold it) and ``load_state_dict`` writes it back to disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from memopt.offload.disk import DiskStore, layout_bytes
from memopt.offload.host import CudaTransfer, HostTransfer, host_view
from memopt.optim.engine import MemoptOptimizer
from memopt.state.formats import flatten_state, unflatten_state
from memopt.validation import check_choice, check_positive_int
from memopt.wrappers.master_weights import MasterWeightOptimizer

#: where the state goes
TIERS = ("cpu", "disk")
#: the key of a master copy in a parameter's file on the disk tier
MASTER = "__master__"


class OffloadOptimizer(MasterWeightOptimizer):
    """Steps ``build(host_model)`` parameter by parameter from gradient hooks, its state on the host or disk.

    Args:
        model: the model that runs forward and backward (CPU or CUDA; float32, float64, bf16 or fp16).
        build: ``build(host_model) -> MemoptOptimizer``; ``host_model`` is ``model`` itself when every
            trainable parameter is a float32/float64 CPU tensor, else a copy of its modules with float32
            host masters (:func:`~memopt.offload.host.host_view`).
        to: ``"cpu"`` (host memory) or ``"disk"`` (files under ``path``, a bounded window in memory).
        path: an existing folder on the disk that holds the state (``to="disk"`` only).
        max_grad_norm: clip the global gradient norm to this (see the module's clipping rule); None: off.
        accumulation_steps: backward passes per optimizer step; parameters step on the last one.
    """

    def __init__(
        self,
        model: nn.Module,
        build: Callable[[nn.Module], Optimizer],
        *,
        to: str = "cpu",
        path: str | os.PathLike | None = None,
        max_grad_norm: float | None = None,
        accumulation_steps: int = 1,
    ) -> None:
        check_choice("to", to, TIERS)
        if to == "disk" and path is None:
            raise ValueError('offload(to="disk") needs path=, an existing folder on the disk to hold the state.')
        if to == "cpu" and path is not None:
            raise ValueError('offload path= is for to="disk"; drop path= or pass to="disk".')
        check_positive_int("accumulation_steps", accumulation_steps)
        if max_grad_norm is not None and not (isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a positive number or None (no clipping), got {max_grad_norm!r}.")
        trainable = [p for p in model.parameters() if p.requires_grad]
        cuda = next((p.device for p in trainable if p.is_cuda), None)
        super().__init__(model, host_view(model, pin=cuda is not None and to == "cpu"), build)
        if not isinstance(self.inner, MemoptOptimizer):
            raise TypeError(
                f"offload works with optimizers of the memopt engine (MemoptOptimizer); build returned "
                f"{type(self.inner).__name__}. Use a registry name whose class is an engine preset."
            )
        self.to, self.max_grad_norm, self.accumulation_steps = to, max_grad_norm, accumulation_steps
        device_of = {id(m): p for p, m in self.pairs}
        self._hosts = [m for group in self.inner.param_groups for m in group["params"]]
        if any(id(m) not in device_of for m in self._hosts):
            raise ValueError("build(host_model) must optimize the parameters of the host_model it is given.")
        self._devices = [device_of[id(m)] for m in self._hosts]
        self._groups = [group for group in self.inner.param_groups for _ in group["params"]]
        self._names = [n for group in self.inner.param_groups for n in _names(group)]
        self._index = {id(p): i for i, p in enumerate(self._devices)}
        self._whole = {i for i, group in enumerate(self._groups) if self.inner.needs_whole_group(group)}
        self.transfer: HostTransfer = CudaTransfer(cuda) if cuda is not None else HostTransfer()
        self._seen = [0] * len(self._hosts)
        self._arrived: list[int] = []  # this step's parameters whose gradient is complete, in backward order
        self._stepped: set[int] = set()
        self._order = list(reversed(range(len(self._hosts))))  # the predicted backward order
        self.last_grad_norm: float | None = None
        self.store: DiskStore | None = None
        self._raw: dict[int, dict[str, Any]] = {}  # disk tier: each parameter's non-tensor state
        self._loaded: set[int] = set()
        if to == "disk":
            self.store = DiskStore(path, describe=lambda i: self._names[i])
            self.store.reserve({i: self._disk_bytes(i) for i in range(len(self._hosts))})
            for i in range(len(self._hosts)):
                if self._separate(i):
                    self._evict(i)  # the masters go to disk now
            self.store.drain()
        self._hooks = [p.register_post_accumulate_grad_hook(self._on_grad) for p in self._devices]

    # ------------------------------------------------------------------------------------------ helpers
    def _separate(self, i: int) -> bool:
        """Whether parameter ``i`` is stepped through a master copy."""
        return self._hosts[i] is not self._devices[i]

    def _eager(self, i: int) -> bool:
        """Whether parameter ``i`` steps in its hook."""
        return self.max_grad_norm is None and i not in self._whole

    def _disk_bytes(self, i: int) -> int:
        host = self._hosts[i]
        tensors = {k: v for k, v in flatten_state(self.inner._template_entries(host, self._groups[i])).items()
                   if torch.is_tensor(v)}  # fmt: skip
        if self._separate(i):
            tensors[MASTER] = host.detach().to("meta")
        return layout_bytes(tensors)

    # ------------------------------------------------------------------------------------ the disk tier
    def _load(self, i: int) -> None:
        """Bring parameter ``i``'s state (and master) into memory from disk."""
        if self.store is None or i in self._loaded or not self.store.has(i):
            return
        tensors = self.store.take(i)
        self._loaded.add(i)
        host = self._hosts[i]
        master = tensors.pop(MASTER, None)
        if master is not None:
            host.data = master
        flat = {**self._raw.pop(i, {}), **tensors}
        if flat:
            like = self.inner._template_entries(host, self._groups[i])
            self.inner.state[host] = unflatten_state(flat, like=like)

    def _evict(self, i: int) -> None:
        """Write parameter ``i``'s state (and master) to disk and drop it from memory."""
        assert self.store is not None
        host = self._hosts[i]
        flat = flatten_state(self.inner.state.pop(host, {}))
        tensors = {k: v for k, v in flat.items() if torch.is_tensor(v)}
        self._raw[i] = {k: v for k, v in flat.items() if not torch.is_tensor(v)}
        if self._separate(i):
            tensors[MASTER] = host.data
            host.data = torch.empty(0, dtype=host.dtype)
        if i in self._loaded:  # from here on the tensors count as being written, not as read
            self._loaded.discard(i)
            self.store.release(i)
        self.store.put(i, tensors)

    def _prefetch_after(self, i: int) -> None:
        if self.store is None:
            return
        position = self._order.index(i) if i in self._order else -1
        for j in self._order[position + 1 :]:
            if j not in self._stepped and j not in self._whole:
                self.store.prefetch(j)
                return

    # -------------------------------------------------------------------------------------------- hooks
    def _on_grad(self, param: torch.Tensor) -> None:
        i = self._index[id(param)]
        self._seen[i] += 1
        if self._seen[i] > self.accumulation_steps:
            raise ValueError(
                f"{self._names[i]} received its gradient {self._seen[i]} times since the last step(), but the offload "
                f"optimizer steps on backward pass {self.accumulation_steps} (accumulation_steps); call step() after "
                "each group of accumulation_steps backward passes, or build it with another accumulation_steps."
            )
        if self._seen[i] < self.accumulation_steps or i in self._arrived:
            return
        self._arrive(i)
        for j in [j for j in self._arrived if j not in self._stepped and self._eager(j)]:
            if self.transfer.ready(j):
                self._step([j])

    def _arrive(self, i: int) -> None:
        self._arrived.append(i)
        device = self._devices[i]
        if self._separate(i):
            self.transfer.to_host(i, device.grad, self._hosts[i].dtype)
            device.grad = None

    def _step(self, indices: list[int]) -> None:
        """Step parameters ``indices`` (their gradients arrived) and put their state back."""
        if self.store is not None:
            self.store.check()
        for i in indices:
            self._load(i)
            if self._separate(i):
                self._hosts[i].grad = self.transfer.host_grad(i)
        self.inner.step_params([self._hosts[i] for i in indices])
        for i in indices:
            self._stepped.add(i)
            host, device = self._hosts[i], self._devices[i]
            if self._separate(i):
                host.grad = None
                self.transfer.to_device(device, host)
            else:
                device.grad = None
            if self.store is not None:
                self._evict(i)
        self._prefetch_after(indices[-1])

    # --------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        """Finish the step: step every parameter not stepped in its hook (all of them with clipping), wait
        for the disk and the copies to the device. Takes no closure."""
        if closure is not None:
            raise ValueError("offload optimizers step from gradient hooks and take no closure.")
        if self.store is not None:
            self.store.check()
        for i, device in enumerate(self._devices):  # gradients whose hook did not reach the last microbatch
            if i not in self._arrived and device.grad is not None:
                self._arrive(i)
        if self.max_grad_norm is not None:
            self._clip()
        left = [i for i in self._arrived if i not in self._stepped]
        for i in [i for i in left if i not in self._whole]:
            self._step([i])
        for group in {id(self._groups[i]): self._groups[i] for i in left if i in self._whole}.values():
            self._step([i for i in left if self._groups[i] is group])
        if self.store is not None:
            self.store.drain()
        self.transfer.finish()
        if self._arrived:
            self._order = self._arrived + [i for i in self._order if i not in set(self._arrived)]
        self._reset()
        if self.store is not None and self._order:
            self.store.prefetch(self._order[0])

    def _clip(self) -> None:
        """Clip every gradient by the global norm (``torch.nn.utils.clip_grad_norm_``'s rule)."""
        grads = []
        for p, _ in self.pairs:
            i = self._index[id(p)]
            if i in self._arrived:
                grads.append(self.transfer.peek(i) if self._separate(i) else p.grad)
        if not grads:
            self.last_grad_norm = 0.0
            return
        total = torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False)
        coef = torch.clamp(float(self.max_grad_norm) / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.to(g.device))
        self.last_grad_norm = float(total)

    def _reset(self) -> None:
        self._seen = [0] * len(self._hosts)
        self._arrived, self._stepped = [], set()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients (the hooks have freed those of stepped parameters) and any held on the host."""
        for device in self._devices:
            if set_to_none:
                device.grad = None
            elif device.grad is not None:
                device.grad.zero_()
        if not self._stepped:
            self.transfer.clear()
            self._reset()

    # -------------------------------------------------------------------------------------- checkpoints
    def _all_in_memory(self) -> None:
        if self.store is not None:
            self.store.drain()
            for i in range(len(self._hosts)):
                self._load(i)

    def _all_to_disk(self) -> None:
        if self.store is not None:
            for i in range(len(self._hosts)):
                self._evict(i)
            self.store.drain()

    def state_dict(self) -> dict[str, Any]:
        """The plain optimizer's state dict, or ``{"inner", "masters"}`` (``MasterWeightOptimizer``'s) when
        the parameters have master copies. On the disk tier all the state is read into it."""
        self._all_in_memory()
        try:
            inner = self.inner.state_dict()
            if not any(self._separate(i) for i in range(len(self._hosts))):
                return inner
            return {"inner": inner, "masters": [m.detach().clone() for m in self.masters()]}
        finally:
            self._all_to_disk()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this optimizer, of the plain one (float32 CPU parameters) or of a
        ``MasterWeightOptimizer`` (parameters with masters)."""
        masters = any(self._separate(i) for i in range(len(self._hosts)))
        if masters != ("masters" in state_dict):
            kind = '{"inner", "masters"} (MasterWeightOptimizer)' if masters else "the plain optimizer's"
            raise ValueError(
                f"This offload optimizer loads {kind} state dicts; the one given has keys {sorted(state_dict)}."
            )
        self._all_in_memory()
        self._raw.clear()
        if masters:
            super().load_state_dict(state_dict)
        else:
            self.inner.load_state_dict(state_dict)
        self._all_to_disk()
        self._reset()
        self.transfer.clear()

    # -------------------------------------------------------------------------------------------- misc
    def resident_state_bytes(self) -> int:
        """Bytes of optimizer state (and masters) in host memory now, as the disk store counts them."""
        return 0 if self.store is None else self.store._resident

    def close(self) -> None:
        """Remove the hooks and, on the disk tier, delete the state files (the optimizer is unusable after)."""
        for hook in self._hooks:
            hook.remove()
        if self.store is not None:
            self.store.close()


def _names(group: dict) -> list[str]:
    names = group.get("param_names")
    if names is None:
        return [f"parameter of shape {tuple(p.shape)}" for p in group["params"]]
    return [f"parameter {n!r}" for n in names]
