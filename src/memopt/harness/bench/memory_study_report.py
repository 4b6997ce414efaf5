"""What both memory studies (image and LM) share: the summary against the baseline mix, the JSON with its
environment, the figure and the printed table."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch


def summarize(rows: list[dict[str, Any]], metric: str) -> None:
    """Add ``reduction`` (baseline peak / peak), ``mean`` (of ``metric`` over seeds) and ``delta`` (that
    mean less the baseline's) to the rows; the first row is the baseline."""
    base = rows[0]
    base_mean = sum(base[metric]) / len(base[metric])
    for row in rows:
        mean = sum(row[metric]) / len(row[metric])
        row["reduction"] = base["peak"] / row["peak"]
        row["mean"] = mean
        row["delta"] = mean - base_mean


def _environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": __import__("os").cpu_count(),
    }


def _write(out: Path, task: str, rows: list[dict[str, Any]], settings: dict[str, Any], ylabel: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"task": task, "settings": settings, "environment": _environment(), "rows": rows, "ylabel": ylabel}
    (out / f"{task}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    plot(payload, out / f"{task}.png")
    return payload


def plot(payload: dict[str, Any], path: Path) -> None:
    """The study's figure: quality change against memory reduction, one labelled point per mix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, task = payload["rows"], payload["task"]
    scale = 100.0 if task == "image" else 1.0
    figure, axis = plt.subplots(figsize=(8.5, 4.8))
    for index, row in enumerate(rows):
        y = row["delta"] * scale
        axis.scatter(row["reduction"], y, s=30)
        offset = (5, 6 if index % 2 else -10)  # alternate above and below, so that neighbours do not overlap
        axis.annotate(row["mix"], (row["reduction"], y), fontsize=7, xytext=offset, textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlim(0.8, 2.2 * max(r["reduction"] for r in rows))
    axis.axhline(0.0, color="grey", lw=0.8)
    if task == "image":
        axis.axhline(-1.0, color="red", lw=0.8, ls="--", label="1 point accuracy loss")
        axis.legend(loc="lower right", fontsize=8)
    axis.set_xlabel("memory reduction factor (baseline peak / peak, measured)")
    axis.set_ylabel(payload["ylabel"])
    axis.set_title(f"memory study: {task}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def format_rows(rows: list[dict[str, Any]], metric: str) -> str:
    """A Markdown table of the study's rows."""
    scale, unit = (100.0, "points") if metric == "accuracy" else (1.0, "nats")
    lines = [
        f"| mix | peak MiB | reduction | {metric} (mean) | change ({unit}) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        value = row["mean"] * scale
        lines.append(
            f"| {row['mix']} | {row['peak'] / 2**20:.2f} | {row['reduction']:.1f}x | {value:.2f} | "
            f"{row['delta'] * scale:+.2f} |"
        )
    return "\n".join(lines)
