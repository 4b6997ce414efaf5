"""The memory/quality frontier of a comparison (``memopt compare --frontier``): each optimizer's final
validation loss against its optimizer-state bytes, with the Pareto front marked.

An optimizer is on the front when no other one has at most its state bytes and at most its loss, with one of
the two strictly smaller: those are the choices worth making, each the best loss for its memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

MIB = 2**20


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The labels of ``points`` (``label -> (state bytes, loss)``) that no other point dominates, by
    increasing state bytes."""

    def dominated(a: tuple[float, float]) -> bool:
        return any(b[0] <= a[0] and b[1] <= a[1] and b != a for b in points.values())

    return sorted((label for label, p in points.items() if not dominated(p)), key=lambda label: points[label])


def plot_frontier(summary: dict[str, Any], path: Path) -> list[str]:
    """Write a PNG of final validation loss against optimizer-state MiB, one labelled point per optimizer of
    ``summary`` (:func:`memopt.harness.bench.compare.summarize`) with a final loss, the Pareto front joined
    by a line and its points ringed. Returns the front's labels (by increasing state)."""
    points = {
        row["optimizer"]: (float(row["state_bytes"]), float(row["final_val_loss"]))
        for row in summary["rows"]
        if row.get("final_val_loss") is not None
    }
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7.5, 5.2), constrained_layout=True)
    for label, (state, loss) in points.items():
        on_front = label in front
        ax.scatter(state / MIB, loss, s=70 if on_front else 35, color="tab:red" if on_front else "tab:gray",
                   edgecolors="black" if on_front else "none", zorder=3)  # fmt: skip
        ax.annotate(label, (state / MIB, loss), textcoords="offset points", xytext=(6, 5), fontsize=9)
    if front:
        ax.plot([points[f][0] / MIB for f in front], [points[f][1] for f in front], color="tab:red",
                drawstyle="steps-post", linewidth=1.2, label="Pareto front (lower state and loss)")  # fmt: skip
        ax.legend(loc="best")
    ax.set_xlabel("optimizer state (MiB)")
    ax.set_ylabel("final validation loss")
    model = summary.get("model") or summary.get("preset") or ""
    ax.set_title(f"memory / quality frontier: {len(points)} optimizers, model {model}".strip())
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return front
