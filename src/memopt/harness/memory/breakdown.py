"""The memory breakdown of a training step: its components, its peak, a table and JSON.

Each component is the largest number of bytes that category held at any moment of the profiled steps
(see :mod:`memopt.harness.memory.tracker` for what is counted; optimizer state is :func:`memopt.state_bytes`, which
adds 8 bytes per Python step counter); ``peak`` is the largest total of live tensor storages, ``at_peak``
its composition. On CUDA a measured breakdown also carries the allocator's own peak.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from memopt.harness.memory.tracker import CATEGORIES

#: the rows of a table, in order, and how they are shown
LABELS = {
    "parameters": "parameters",
    "master_weights": "fp32 master weights",
    "buffers": "buffers (masks, norms)",
    "gradients": "gradients",
    "optimizer_state": "optimizer state",
    "activations": "activations (saved)",
    "temporaries": "temporaries",
}


@dataclass
class MemoryBreakdown:
    """Bytes of each component of training memory (see the module docstring).

    Attributes:
        components: the largest bytes of each category (keys: :data:`memopt.harness.memory.tracker.CATEGORIES`).
        at_peak: each category's bytes at the peak.
        peak: the largest total bytes live.
        mode: ``"estimate"`` (fake tensors) or ``"measure"`` (a real run).
        device: where it ran (or was planned for).
        allocator_peak: CUDA only: ``torch.cuda.max_memory_allocated`` during the steps, less what was
            allocated before; None elsewhere.
        state_storage: bytes of the storages that the optimizer state's tensors keep alive; more than the
            ``optimizer_state`` component when a state tensor is a view of a larger tensor.
        config: what was profiled (workload, optimizer, batch, techniques).
        seconds: wall time of the profiling.
    """

    components: dict[str, int]
    at_peak: dict[str, int]
    peak: int
    mode: str
    device: str
    allocator_peak: int | None = None
    state_storage: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __getitem__(self, name: str) -> int:
        return self.peak if name == "peak" else self.components[name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def _mib(value: int) -> str:
    return f"{value / 2**20:,.2f}"


def format_breakdown(breakdown: MemoryBreakdown, savings: dict[str, int] | None = None) -> str:
    """A table of ``breakdown`` in MiB; ``savings`` (technique -> bytes of peak it saves) below it."""
    width = max(len(v) for v in LABELS.values()) + 2
    lines = [f"{'component':<{width}}{'MiB':>14}{'at peak':>14}"]
    for key in CATEGORIES:
        if breakdown.components[key] or key not in ("master_weights", "buffers"):
            lines.append(
                f"{LABELS[key]:<{width}}{_mib(breakdown.components[key]):>14}{_mib(breakdown.at_peak[key]):>14}"
            )
    held = breakdown.state_storage
    if held is not None and held > 1.01 * breakdown.components["optimizer_state"] + 4096:
        lines.append(f"{'  state storages held':<{width}}{_mib(held):>14}   (state tensors are views of larger ones)")
    lines.append(f"{'peak':<{width}}{_mib(breakdown.peak):>14}")
    if breakdown.allocator_peak is not None:
        lines.append(f"{'CUDA allocator peak':<{width}}{_mib(breakdown.allocator_peak):>14}")
    if savings:
        lines.append("")
        lines.append(f"{'technique':<{width}}{'saves MiB':>14}{'x peak':>14}")
        for name, saved in savings.items():
            without = breakdown.peak + saved
            ratio = without / breakdown.peak if breakdown.peak else float("nan")
            lines.append(f"{name:<{width}}{_mib(saved):>14}{ratio:>13.2f}x")
    return "\n".join(lines)
