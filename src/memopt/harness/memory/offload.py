"""What offloading the optimizer state (:mod:`memopt.offload`) does to a planned training step's memory.

From a profiled :class:`~memopt.harness.memory.breakdown.MemoryBreakdown` and the tier:

* **device peak**: the breakdown's peak less the optimizer state and the float32 masters held at the peak
  (they leave the parameters' device), plus, where the device is the host (a CPU run), what of them stays
  in memory: all of it with ``to="cpu"`` (the peak is unchanged), the disk tier's window with ``to="disk"``;
* **host RAM** (beyond the device's own memory; 0 on a CPU run, where it is the same memory): the state and
  masters with ``to="cpu"``, the window with ``to="disk"``;
* **disk**: the state and masters with ``to="disk"``.

The window is three parameters' state and master (the one stepping, the next one prefetched, the last one
being written back; :mod:`memopt.offload.disk`), the largest three, computed from the optimizer's state
template on the meta device. Gradients are counted as in the plan without offloading (hook stepping frees
each one early when clipping is off; not credited here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from memopt.harness.memory.breakdown import MemoryBreakdown
from memopt.harness.memory.profile import prepare_model
from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.workloads import Workload
from memopt.harness.train import optimizers as opt_lib
from memopt.offload.optimizer import TIERS
from memopt.state.formats import flatten_state

__all__ = ["TIERS", "WINDOW", "OffloadPlan", "format_offload", "parameter_state_bytes", "plan_offload"]

#: parameters whose state the disk tier holds in memory at once
WINDOW = 3


@dataclass(frozen=True)
class OffloadPlan:
    """Bytes of a training step with its optimizer state offloaded (see the module docstring)."""

    tier: str
    device_peak: int
    host_ram: int
    disk: int
    window: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parameter_state_bytes(
    workload: Workload, techniques: Techniques, optimizer: str, hparams: dict[str, Any], device: str = "cpu"
) -> list[int]:
    """Bytes of each trainable parameter's state (checkpoint layout) plus its float32 master where the
    offloaded optimizer keeps one, from the state template of the optimizer built on the meta device."""
    with torch.device("meta"):
        model, master = prepare_model(workload, techniques)
    built = opt_lib.build(master if master is not None else model, optimizer, hparams)
    inner = getattr(built, "inner", built)
    # a master for 16-bit parameters (bf16-master already has one) and for parameters on a GPU
    keeps_master = master is not None or techniques.param_dtype != torch.float32 or not device.startswith("cpu")
    sizes = []
    for group in inner.param_groups:
        for param in group["params"]:
            entries = flatten_state(inner._template_entries(param, group))
            size = sum(v.numel() * v.element_size() for v in entries.values() if torch.is_tensor(v))
            if keeps_master:
                size += param.numel() * 4
            sizes.append(size)
    return sizes


def plan_offload(breakdown: MemoryBreakdown, tier: str, sizes: list[int]) -> OffloadPlan:
    """The :class:`OffloadPlan` of ``breakdown`` with the state offloaded to ``tier`` (``"cpu"`` or
    ``"disk"``); ``sizes``: :func:`parameter_state_bytes`."""
    offloaded = breakdown.components["optimizer_state"] + breakdown.components.get("master_weights", 0)
    at_peak = breakdown.at_peak.get("optimizer_state", 0) + breakdown.at_peak.get("master_weights", 0)
    window = sum(sorted(sizes, reverse=True)[:WINDOW])
    on_host = breakdown.device.startswith("cpu")
    if on_host:  # the host is the device: what stays in memory is counted in its peak
        device_peak = breakdown.peak - at_peak + (at_peak if tier == "cpu" else min(window, at_peak))
        host_ram = 0
    else:
        device_peak = breakdown.peak - at_peak
        host_ram = offloaded if tier == "cpu" else min(window, offloaded)
    return OffloadPlan(tier, device_peak, host_ram, offloaded if tier == "disk" else 0, window)


def format_offload(plan: OffloadPlan) -> str:
    """The plan as lines in MiB, under the breakdown's table."""
    mib = 2**20
    return (
        f"offload to {plan.tier}: device peak {plan.device_peak / mib:,.2f} MiB; host RAM {plan.host_ram / mib:,.2f} "
        f"MiB; disk {plan.disk / mib:,.2f} MiB (disk window: {WINDOW} parameters, {plan.window / mib:,.2f} MiB)"
    )
