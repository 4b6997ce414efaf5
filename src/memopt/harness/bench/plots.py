"""Figures for ``memopt compare``: validation loss against tokens, and optimizer-state memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt


def plot_compare(summary: dict[str, Any], path: Path) -> None:
    """Write a two-panel PNG: validation loss vs tokens (left), optimizer-state MiB per optimizer (right).

    Args:
        summary: the dictionary returned by :func:`memopt.harness.bench.compare.summarize`.
        path: the PNG file to write.
    """
    rows = summary["rows"]
    baseline = summary["baseline"]
    colors = plt.get_cmap("tab10").colors
    fig, (curves, bars) = plt.subplots(
        1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.6, 1]}, constrained_layout=True
    )

    target = summary.get("target_val_loss")
    for i, row in enumerate(rows):
        tokens = [e["tokens"] / 1e6 for e in row["evals"]]
        losses = [e["val_loss"] for e in row["evals"]]
        lr = row.get("hparams", {}).get("lr")
        label = row["optimizer"] + ("" if lr is None else f", lr {lr:g}")
        color = colors[i % 10]
        curves.plot(tokens, losses, marker="o", markersize=3, linewidth=1.8, color=color,
                    label=f"{label} ({row['state_mib']:.2f} MiB state)")  # fmt: skip
        if target is not None and row.get("tokens_to_target") is not None:  # where it reaches the target
            curves.plot([row["tokens_to_target"] / 1e6], [target], marker="x", markersize=9, mew=2,
                        color=color, linestyle="none")  # fmt: skip
    if target is not None:  # explained in the legend, so no text lands on a curve
        curves.axhline(target, color="0.4", linestyle="--", linewidth=1,
                       label=f"{baseline}'s final loss {target:.3f}; x = where each run reaches it")  # fmt: skip
    all_losses = [e["val_loss"] for row in rows for e in row["evals"]]
    if all_losses:  # the first evaluations are far above the rest; keep the interesting range readable
        low, high = min(all_losses), sorted(all_losses)[int(0.9 * (len(all_losses) - 1))]
        margin = 0.08 * (high - low or 1.0)
        curves.set_ylim(low - margin, high + margin)
    curves.set_xlabel("training tokens (millions)")
    curves.set_ylabel("validation loss (nats/token)")
    curves.set_title("Validation loss against tokens")
    curves.grid(True, alpha=0.3)
    curves.legend(fontsize=9)

    names = [row["optimizer"] for row in rows]
    mib = [row["state_mib"] for row in rows]
    drawn = bars.bar(names, mib, color=[colors[i % 10] for i in range(len(rows))])
    for bar, row in zip(drawn, rows, strict=False):
        pct = row["state_pct_of_baseline"]
        label = f"{row['state_mib']:.2f} MiB" + ("" if pct is None else f"\n{pct:.0f}% of {baseline}")
        bars.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
            xytext=(0, 2),
            textcoords="offset points",
        )
    bars.set_ylim(0, max([*mib, 1e-09]) * 1.25)
    bars.set_ylabel("optimizer state (MiB)")
    bars.set_title("Optimizer state memory")
    bars.tick_params(axis="x", labelrotation=20 if len(rows) > 3 else 0)
    bars.grid(True, axis="y", alpha=0.3)

    model = summary.get("model", "")
    params = summary.get("num_params")
    title = f"memopt compare: model {model}" + (f" ({params / 1e6:.2f}M parameters)" if params else "")
    data = summary.get("data", {})
    if data.get("corpus"):
        title += f", data {data['corpus']}, vocabulary {data.get('vocab_size')}"
    if summary.get("tokens_per_step"):
        title += f", {summary['tokens_per_step']:,} tokens/step"
    fig.suptitle(title, fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
