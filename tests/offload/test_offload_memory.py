"""The disk tier keeps at most a window of the optimizer state in memory.

Measured by a census of live tensors (``gc``), not by the store's own bookkeeping: after each parameter's
step (where the window is fullest: the state just stepped, the next one prefetched, the last one being
written), every live tensor's storage is counted once, except the parameters', the gradients', the input
batches' and those alive before the run began. With 16 equal layers and AdamW the census stays below a
quarter of the state's size (the window is 3 of the 34 weights' and biases' states, at most 3 of the 17
weights': about 0.18), where the same count with ``to="cpu"`` is the whole state.
"""

from __future__ import annotations

import gc
import warnings

import torch
from offload_models import batches, tiny_model, train

from memopt.offload import offload
from memopt.registry.specs import build_optimizer
from memopt.state.accounting import state_bytes

LAYERS = 16


def live_tensors() -> list[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on deprecated module attributes
        return [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]


def live_bytes(excluded: set[int]) -> int:
    """Bytes of the storages of all live tensors whose storage is not in ``excluded`` (data pointers)."""
    seen: dict[int, int] = {}
    for obj in live_tensors():
        if obj.device.type == "cpu":
            storage = obj.untyped_storage()
            if storage.data_ptr() not in excluded:
                seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def peak_census(to: str, tmp_path) -> tuple[int, int, object]:
    gc.collect()
    # tensors alive before (other tests' leftovers) are held here, so that no new tensor can reuse their
    # addresses, and left out of the count
    before = live_tensors()
    before_storages = {t.untyped_storage().data_ptr() for t in before}
    model = tiny_model(layers=LAYERS)
    optimizer = offload("adamw", model, to, tmp_path if to == "disk" else None, max_grad_norm=1.0)
    data = batches(3, 1)
    peak = {"bytes": 0, "calls": 0}
    step_params = optimizer.inner.step_params

    def counted(params):
        step_params(params)
        peak["calls"] += 1
        if peak["calls"] <= 2 * len(optimizer.pairs) or peak["calls"] % 3:  # the last step, every third parameter
            return
        excluded = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *(x for b in data for x in b)]}
        excluded |= {p.grad.untyped_storage().data_ptr() for p in model.parameters() if p.grad is not None}
        excluded |= before_storages | {0}
        peak["bytes"] = max(peak["bytes"], live_bytes(excluded))

    optimizer.inner.step_params = counted
    train(model, optimizer, data)
    reference = build_optimizer(tiny_model(layers=LAYERS), "adamw")
    reference.prepare_state()
    del before
    return peak["bytes"], state_bytes(reference), optimizer


def test_disk_tier_keeps_a_window_of_the_state(tmp_path):
    peak, total, optimizer = peak_census("disk", tmp_path)
    assert peak < total / 4, f"{peak} bytes of live tensors at a step, the whole state is {total}"
    assert optimizer.store.peak_resident < total / 4
    counters = 8 * len(optimizer.pairs)  # state_bytes counts each step counter (in memory) as 8 bytes
    assert optimizer.store.bytes_on_disk() >= total - counters  # all the rest is on disk


def test_the_census_sees_state_held_in_memory(tmp_path):
    peak, total, _ = peak_census("cpu", tmp_path)
    assert peak >= total * 0.95
