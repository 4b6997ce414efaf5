"""Metrics as JSON Lines: one object per training step (``"event": "train"``) or evaluation (``"eval"``).

Training lines hold ``step``, ``tokens``, ``loss``, ``lr``, ``grad_norm``, ``step_time``, ``tokens_per_s`` and
``elapsed`` (seconds since this invocation's loop started, so consecutive differences time whole iterations);
evaluation lines hold ``step``, ``tokens``, ``val_loss`` and ``val_ppl``. Timing fields are measurements and
differ between runs; every other field is a deterministic function of the configuration on CPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from memopt.harness.train.checkpoint import atomic_write_bytes

METRICS_NAME = "metrics.jsonl"
#: Fields that are measurements of time and so differ between otherwise identical runs.
TIMING_FIELDS = ("step_time", "tokens_per_s", "elapsed", "eval_time")


_NON_FINITE = ("inf", "-inf", "nan")


def _clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: write non-finite floats as strings (``"inf"``, ``"-inf"``, ``"nan"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float, at any depth of dicts and lists, written as a string."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return _clean(value)


def _restore(value: Any) -> Any:
    """A value read back: the strings that :func:`_clean` wrote become floats again."""
    return float(value) if isinstance(value, str) and value in _NON_FINITE else value


class MetricsWriter:
    """Appends metric records to a JSON Lines file, one flushed line per record."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        self._file.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def format_metric(value: float | None, spec: str = ".4f") -> str:
    """A metric for a person: ``spec`` for ordinary values, ``inf``/``nan`` when not finite, three
    significant digits from a million up (a diverged run's perplexity is not a 90-digit number), ``n/a``
    for None."""
    if value is None:
        return "n/a"
    if not math.isfinite(value) or abs(value) < 1e6:
        return format(value, spec)
    return format(value, ".3g")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics file (an empty list if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as file:
        return [{k: _restore(v) for k, v in json.loads(line).items()} for line in file if line.strip()]


def truncate_after(path: Path, step: int, eval_every: int) -> None:
    """Prepare a run's metrics for resuming at ``step``, atomically.

    Drops records logged after ``step`` (the resumed run logs them again) and an evaluation at ``step``
    itself that is off the ``eval_every`` grid: the stopped run evaluated there only because it ended
    there, and an uninterrupted run would not have.
    """

    def keep(record: dict[str, Any]) -> bool:
        if record.get("step", 0) > step:
            return False
        off_grid = eval_every <= 0 or step % eval_every != 0
        return not (record.get("event") == "eval" and record.get("step") == step and off_grid)

    kept = [r for r in read_metrics(path) if keep(r)]
    text = "".join(json.dumps(json_safe(r)) + "\n" for r in kept)
    atomic_write_bytes(path, lambda file: file.write(text.encode("utf-8")))


def eval_curve(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """``(tokens, val_loss)`` of every evaluation record, in order."""
    return [(r["tokens"], float(r["val_loss"])) for r in records if r.get("event") == "eval"]


def without_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with the timing fields removed (for comparing runs)."""
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]
