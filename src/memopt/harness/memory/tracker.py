"""A live-tensor tracker: which storages are alive at every moment of a training step, and what they are.

The method (the "live-tensor model" the planner's figures rest on):

* Every tensor a torch operator returns is seen by a ``TorchDispatchMode``; its *storage* is counted
  once, from the moment it is first seen until Python frees it (a weak reference's callback). Views and
  in-place results share a storage and add nothing. The peak is the largest sum of live storages, taken
  after every operator.
* Tensors that exist before tracking starts (the model's parameters and buffers, an fp32 master copy) are
  registered with :meth:`LiveTensorTracker.track`.
* Each storage gets one category, the strongest it ever had (``parameters`` > ``master_weights`` >
  ``buffers`` > ``optimizer_state`` > ``gradients`` > ``activations`` > ``temporaries``): a parameter
  that autograd saves stays a parameter; a tensor packed by ``torch.autograd.graph.saved_tensors_hooks``
  is an activation; a parameter's ``.grad`` (seen by a post-accumulate-grad hook) is a gradient;
  everything in ``optimizer.state`` after a step is optimizer state; the rest are temporaries (outputs
  not saved for backward, gradients of activations, the optimizer's scratch tensors).
* Categories are final only at the end (state is recognised after the step that created it), so the
  tracker logs every allocation and free and :meth:`LiveTensorTracker.summary` replays the log with the
  final categories: the maximum of each category over the run, and the composition at the peak.

Storage sizes are ``nbytes``; on CUDA each is rounded up to the caching allocator's 512-byte block, so
that the figure is comparable to ``torch.cuda.max_memory_allocated``. Memory that no tensor holds
(cuBLAS workspaces, the allocator's fragmentation, the CPU allocator's own overhead) is not seen. The
same code runs on real tensors (measure) and on fake tensors that have shapes but no data (estimate).

Written by hand because torch's own tracker of this kind (``torch.distributed._tools.mem_tracker``) is
private, needs ``torch.distributed``, and does not single out the tensors saved for backward.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from memopt.state.formats import QuantizedState

#: the categories, strongest first
CATEGORIES = (
    "parameters",
    "master_weights",
    "buffers",
    "optimizer_state",
    "gradients",
    "activations",
    "temporaries",
)
_RANK = {name: i for i, name in enumerate(CATEGORIES)}
CUDA_BLOCK = 512


@dataclass(frozen=True)
class TrackerSummary:
    """What a tracked run held.

    Attributes:
        maximum: for each category, the largest number of bytes it held at any moment.
        at_peak: for each category, the bytes it held at the moment of the peak.
        peak: the largest total of live bytes.
        events: allocations and frees seen.
    """

    maximum: dict[str, int]
    at_peak: dict[str, int]
    peak: int
    events: int


def _storage_bytes(storage: torch.UntypedStorage) -> int:
    size = storage.nbytes()
    if storage.device.type == "cuda":
        return math.ceil(size / CUDA_BLOCK) * CUDA_BLOCK
    return size


class LiveTensorTracker(TorchDispatchMode):
    """Counts live tensor storages by category (see the module docstring).

    Use as a context manager around the work to track; :meth:`saving` counts autograd's saved tensors,
    :meth:`watch_gradients` and :meth:`mark` classify gradients and optimizer state.
    """

    def __init__(self) -> None:
        super().__init__()
        self._refs: dict[int, weakref.ref] = {}  # live storages by key
        self._ids: dict[int, int] = {}  # id() of a live storage's Python object -> its key
        self._bytes: dict[int, int] = {}  # every storage ever seen: its bytes
        self._category: dict[int, str] = {}  # and its strongest category so far
        self._log: list[tuple[int, int]] = []  # (key, +bytes or -bytes) in order
        self._next_key = 0
        self._live = 0
        self._peak = 0
        self._peak_event = 0

    # ------------------------------------------------------------------ registration
    def _key_of(self, tensor: torch.Tensor) -> int:
        """The key of ``tensor``'s storage, counting the storage if it is new. A storage's Python object
        lives exactly as long as the storage (torch preserves it), so its ``id`` names it while alive."""
        storage = tensor.untyped_storage()
        key = self._ids.get(id(storage))
        return key if key is not None else self._add(storage)

    def _add(self, storage: torch.UntypedStorage) -> int:
        key = self._next_key
        self._next_key += 1
        size = _storage_bytes(storage)
        storage_id = id(storage)
        self._ids[storage_id] = key

        def freed(_ref: weakref.ref, key: int = key, storage_id: int = storage_id) -> None:
            self._refs.pop(key, None)
            if self._ids.get(storage_id) == key:
                del self._ids[storage_id]
            self._record(key, -self._bytes[key])

        self._refs[key] = weakref.ref(storage, freed)
        self._bytes[key] = size
        self._category[key] = "temporaries"
        self._record(key, size)
        return key

    def _record(self, key: int, delta: int) -> None:
        self._log.append((key, delta))
        self._live += delta
        if self._live > self._peak:
            self._peak = self._live
            self._peak_event = len(self._log)

    def track(self, tensors: Iterable[torch.Tensor | None], category: str) -> None:
        """Count ``tensors`` (already allocated, or new) and give them ``category`` (if stronger)."""
        if category not in _RANK:
            raise ValueError(f"category {category!r}: choose one of {', '.join(CATEGORIES)}")
        for tensor in tensors:
            if tensor is None or not isinstance(tensor, torch.Tensor):
                continue
            for inner in _plain_tensors(tensor):
                key = self._key_of(inner)
                if _RANK[category] < _RANK[self._category[key]]:
                    self._category[key] = category

    def mark_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Classify every tensor in ``optimizer.state`` (call after a step)."""
        self.track(_state_tensors(optimizer.state.values()), "optimizer_state")

    # ------------------------------------------------------------------ hooks
    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """Within this context, tensors that autograd saves for backward are activations."""

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            self.track([tensor], "activations")
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield

    def watch_gradients(self, params: Iterable[torch.Tensor]) -> list:
        """Classify each parameter's ``.grad`` as a gradient once backward has accumulated it; returns
        the hook handles (remove them when done)."""
        handles = []
        for param in params:
            if param.requires_grad:
                handles.append(param.register_post_accumulate_grad_hook(lambda p: self.track([p.grad], "gradients")))
        return handles

    # ------------------------------------------------------------------ dispatch
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                for inner in _plain_tensors(value):
                    self._key_of(inner)
        return out

    # ------------------------------------------------------------------ results
    @property
    def live_bytes(self) -> int:
        """Bytes alive now."""
        return self._live

    def summary(self) -> TrackerSummary:
        """Replay the log with the final categories: each category's maximum and the peak's composition."""
        current = dict.fromkeys(CATEGORIES, 0)
        maximum = dict.fromkeys(CATEGORIES, 0)
        at_peak = dict(current)
        for index, (key, delta) in enumerate(self._log, start=1):
            category = self._category[key]
            current[category] += delta
            maximum[category] = max(maximum[category], current[category])
            if index == self._peak_event:
                at_peak = dict(current)
        return TrackerSummary(maximum=maximum, at_peak=at_peak, peak=self._peak, events=len(self._log))


def _plain_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The tensors holding ``tensor``'s memory: itself, or for a wrapper subclass (DTensor, torchao's
    quantized states) the tensors it wraps."""
    is_wrapper = type(tensor) is not torch.Tensor and hasattr(tensor, "__tensor_flatten__")
    if is_wrapper and not isinstance(tensor, (torch.nn.Parameter, FakeTensor)):
        names, _ = tensor.__tensor_flatten__()
        return [t for name in names for t in _plain_tensors(getattr(tensor, name))]
    return [tensor]


def _state_tensors(values) -> Iterator[torch.Tensor]:
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, QuantizedState):
            yield from value.tensors()
        elif isinstance(value, dict):
            yield from _state_tensors(value.values())
        elif isinstance(value, (list, tuple)):
            yield from _state_tensors(value)
