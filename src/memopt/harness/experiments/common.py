"""What every study shares: its options, the output folder (JSON + PNG) and the printed summary."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Options:
    """Settings common to all studies (from the command line)."""

    out: Path
    seeds: int = 3
    quick: bool = False
    #: registry names (``--optimizers``), for the studies that take them; None: the study's default
    optimizers: tuple[str, ...] | None = None
    #: processes for a study's independent runs (``--jobs``; the studies that take it give the same numbers)
    jobs: int = 1


@dataclass
class StudyResult:
    """What a study produced: JSON-able ``data``, a matplotlib ``figure`` and summary ``lines``."""

    data: dict[str, Any]
    figure: Any
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Study:
    """A named study: ``run(options) -> StudyResult``; ``takes_optimizers`` / ``takes_jobs``: it reads
    ``options.optimizers`` / ``options.jobs``."""

    name: str
    help: str
    run: Callable[[Options], StudyResult]
    takes_optimizers: bool = False
    takes_jobs: bool = False


def environment() -> dict[str, Any]:
    """Where the numbers come from: machine, threads, library versions."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def write(study: Study, options: Options, result: StudyResult, seconds: float) -> tuple[Path, Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.png``; return their paths."""
    options.out.mkdir(parents=True, exist_ok=True)
    json_path = options.out / f"{study.name}.json"
    png_path = options.out / f"{study.name}.png"
    payload = {
        "study": study.name,
        "options": {"seeds": options.seeds, "quick": options.quick, "optimizers": options.optimizers},
        "environment": environment(),
        "seconds": round(seconds, 2),
        "summary": result.lines,
        "data": result.data,
    }
    json_path.write_text(json.dumps(_finite(payload), indent=1, default=_jsonable, allow_nan=False) + "\n")
    result.figure.savefig(png_path, dpi=80, bbox_inches="tight")
    return json_path, png_path


def _finite(value: Any) -> Any:
    """Non-finite floats become strings ("inf", "nan") so that the file is strict JSON; keys become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def timed(study: Study, options: Options) -> tuple[StudyResult, float]:
    start = time.perf_counter()
    result = study.run(options)
    return result, time.perf_counter() - start


def figure(ncols: int, width: float = 5.0, height: float = 3.6):
    """A row of ``ncols`` axes (matplotlib with the non-interactive Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx = [math.log(v) for v in x]
    ly = [math.log(v) for v in y]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def step_with(optimizer: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One step on the loss ``closure`` computes (it zeroes the gradients and calls ``backward``): through
    ``step(closure)`` for the optimizers that need one (``needs_closure``), else one evaluation and ``step()``."""
    if getattr(optimizer, "needs_closure", False):
        return optimizer.step(closure)
    loss = closure()
    optimizer.step()
    return loss
