"""Where ``memopt compare`` measured, and how busy the machine was while it did.

Step times mean little on a machine that other jobs share. :class:`LoadProbe` measures, over one run, the
share of wall time during which some task was waiting for a CPU (Linux's pressure stall information,
``/proc/pressure/cpu``, ``some`` line) and the load average at its end; a run with a CPU pressure of
:data:`BUSY_PRESSURE` or more (or, without PSI, a load average above the number of cores) counts as
measured on a busy machine.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch

#: the share of wall time with a task waiting for a CPU from which a run counts as measured on a busy machine
BUSY_PRESSURE = 0.10


def machine_info(device: str) -> dict[str, Any]:
    """Where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _pressure_total_us() -> int | None:
    """Microseconds in which some task waited for a CPU since boot (None without PSI)."""
    try:
        with open("/proc/pressure/cpu") as file:
            for line in file:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def load_average() -> float | None:
    """The one-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


class LoadProbe:
    """Measures how busy the machine is between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self._wall = 0.0
        self._pressure: int | None = None

    def start(self) -> None:
        """Begin measuring."""
        self._wall = time.monotonic()
        self._pressure = _pressure_total_us()

    def stop(self) -> dict[str, Any]:
        """``cpu_pressure`` (share of wall time, or None), ``load_avg`` (one minute) and ``busy``."""
        wall = time.monotonic() - self._wall
        end = _pressure_total_us()
        pressure = None
        if end is not None and self._pressure is not None and wall > 0:
            pressure = min(1.0, (end - self._pressure) / 1e6 / wall)
        load = load_average()
        if pressure is not None:
            busy = pressure >= BUSY_PRESSURE
        else:
            busy = load is not None and load > (os.cpu_count() or 1)
        return {"cpu_pressure": pressure, "load_avg": load, "busy": busy}
