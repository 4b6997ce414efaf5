"""Figures for ``memopt compare``: validation loss against tokens (a band over seeds), optimizer-state
memory, and the hyperparameter sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt
import matplotlib.ticker


def plot_compare(summary: dict[str, Any], path: Path) -> dict[str, int]:
    """Write a two-panel PNG: validation loss vs tokens (left; the mean over seeds, and a band from the
    lowest to the highest seed), optimizer-state MiB per optimizer (right).

    Args:
        summary: the dictionary returned by :func:`memopt.harness.bench.compare.summarize`.
        path: the PNG file to write.

    Returns:
        what was drawn: ``{"curves": n, "bands": m}`` (a band for each optimizer run with 2+ seeds).
    """
    rows = summary["rows"]
    baseline = summary["baseline"]
    colors = plt.get_cmap("tab10").colors
    fig, (curves, bars) = plt.subplots(
        1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.6, 1]}, constrained_layout=True
    )

    target = summary.get("target_val_loss")
    drawn_bands = 0
    for i, row in enumerate(rows):
        curve = row.get("curve") or [{"tokens": e["tokens"], "mean": e["val_loss"], "n": 1} for e in row["evals"]]
        tokens = [c["tokens"] / 1e6 for c in curve]
        losses = [c["mean"] for c in curve]
        lr = row.get("hparams", {}).get("lr")
        label = row["optimizer"] + ("" if lr is None else f", lr {lr:g}")
        plain = row.get("hparams", {}).get("plain_lr")
        if plain is not None and plain != lr:
            label += f" (embeddings/norms {plain:g})"
        color = colors[i % 10]
        seeds = row.get("seeds", 1)
        curves.plot(tokens, losses, marker="o", markersize=3, linewidth=1.8, color=color,
                    label=f"{label} ({row['state_mib']:.2f} MiB state)"
                    + (f", mean of {seeds} seeds" if seeds > 1 else ""))  # fmt: skip
        if seeds > 1 and all("min" in c for c in curve):
            curves.fill_between(tokens, [c["min"] for c in curve], [c["max"] for c in curve], color=color, alpha=0.2,
                                linewidth=0)  # fmt: skip
            drawn_bands += 1
        if target is not None and row.get("tokens_to_target") is not None:  # where it reaches the target
            curves.plot([row["tokens_to_target"] / 1e6], [target], marker="x", markersize=9, mew=2,
                        color=color, linestyle="none")  # fmt: skip
    if target is not None:  # explained in the legend, so no text lands on a curve
        curves.axhline(target, color="0.4", linestyle="--", linewidth=1,
                       label=f"{baseline}'s final loss {target:.3f}; x = where each run reaches it")  # fmt: skip
    all_losses = [e["val_loss"] for row in rows for run in row.get("runs") or [row] for e in run["evals"]]
    if all_losses:  # the first evaluations are far above the rest; keep the interesting range readable
        low, high = min(all_losses), sorted(all_losses)[int(0.9 * (len(all_losses) - 1))]
        margin = 0.08 * (high - low or 1.0)
        curves.set_ylim(low - margin, high + margin)
    curves.set_xlabel("training tokens (millions)")
    curves.set_ylabel("validation loss (nats/token)")
    curves.set_title("Validation loss against tokens" + (" (bands: lowest to highest seed)" if drawn_bands else ""))
    curves.grid(True, alpha=0.3)
    curves.legend(fontsize=9)

    names = [row["optimizer"] for row in rows]
    mib = [row["state_mib"] for row in rows]
    drawn = bars.bar(names, mib, color=[colors[i % 10] for i in range(len(rows))])
    for bar, row in zip(drawn, rows, strict=False):
        pct = row["state_pct_of_baseline"]
        share = "" if pct is None else f"\n{pct:.0f}%" + (f" of {baseline}" if len(rows) <= 4 else "")
        label = f"{row['state_mib']:.2f} MiB{share}"  # narrow bars (5 or more): a short label
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
    return {"curves": len(rows), "bands": drawn_bands}


def plot_sweeps(summary: dict[str, Any], path: Path) -> int:
    """Write one panel per tuned hyperparameter: final validation loss against the swept value, a line per
    optimizer, the chosen value ringed (a diverged run is left out). Returns the number of panels."""
    sweeps = summary.get("tuning", {}).get("sweeps", [])
    keys = list(dict.fromkeys(s["key"] for s in sweeps))
    if not keys:
        return 0
    labels = list(dict.fromkeys(s["optimizer"] for s in sweeps))
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 4.8), constrained_layout=True, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        numeric = True
        for sweep in (s for s in sweeps if s["key"] == key):
            color = colors[labels.index(sweep["optimizer"]) % 10]
            points = [(i, v, loss) for i, (v, loss) in enumerate(zip(sweep["values"], sweep["losses"], strict=True))
                      if not isinstance(loss, str)]  # fmt: skip
            numeric = numeric and all(isinstance(v, int | float) for _, v, _ in points)
            xs = [v if numeric else i for i, v, _ in points]
            ax.plot(xs, [loss for *_, loss in points], marker="o", color=color,
                    label=sweep["optimizer"] + (" (at the grid's edge)" if sweep.get("at_edge") else ""))  # fmt: skip
            chosen = sweep["chosen_index"]
            best = sweep["losses"][chosen]
            ax.plot([sweep["values"][chosen] if numeric else chosen], [best], marker="o", markersize=13,
                    markerfacecolor="none", markeredgewidth=2, color=color, linestyle="none")  # fmt: skip
            if not numeric:
                ax.set_xticks(range(len(sweep["values"])), [str(v) for v in sweep["values"]], rotation=20)
        if numeric:  # log axis, labelled at the grid's values only (minor labels would overlap)
            ax.set_xscale("log")
            values = sorted({v for s in sweeps if s["key"] == key for v in s["values"]})
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(key)
        ax.set_ylabel("final validation loss")
        ax.set_title(f"sweep of {key} (ringed: chosen)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=9)
    tuning = summary.get("tuning", {})
    fig.suptitle(f"memopt compare --tune {','.join(keys)}: {tuning.get('tokens_per_run') or 0:,} tokens per run, "
                 f"{tuning.get('seeds') or 1} seed(s) per value", fontsize=12)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(keys)
