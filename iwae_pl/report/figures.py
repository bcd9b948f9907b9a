"""The report's figures: PNGs of measured runs (solid) next to published values (open markers, dashed).

Plain matplotlib ``Figure`` objects (no pyplot state), at least 800 px wide at the default 100 dpi.
Each function takes already-aggregated numbers, so the report decides what goes in a figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..diagnostics.figures import DPI
Series = Mapping[str, Sequence[tuple[float, float]]]  # label -> [(x, y)]


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _plot_series(ax, series: Series, published: Series | None = None) -> None:
    colors = {}
    for i, (label, points) in enumerate(series.items()):
        if not points:
            continue
        xs, ys = zip(*sorted(points))
        line, = ax.plot(xs, ys, "o-", label=label, color=f"C{i}")
        colors[label] = line.get_color()
    for i, (label, points) in enumerate((published or {}).items()):
        if not points:
            continue
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, "s--", mfc="none", color=colors.get(label.split(" (")[0], f"C{i}"), alpha=0.7,
                label=f"{label} (published)")
    if len(ax.get_lines()) > 1:
        ax.legend(fontsize=8)


def line_panels(panels: Sequence[tuple[str, Series, Series | None]], xlabel: str, ylabel: str, title: str,
                logx: bool = False, logy: bool = False) -> Figure:
    """One panel per (title, measured series, published series); shared axis labels."""
    n = max(1, len(panels))
    fig = Figure(figsize=(max(8.8, 4.4 * n), 3.6))
    for i, (panel_title, series, published) in enumerate(panels, 1):
        ax = fig.add_subplot(1, n, i)
        _plot_series(ax, series, published)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log")
            ticks = sorted({x for s in series.values() for x, _ in s})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])  # label the measured settings (k or M), not decades
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def stacked_units(groups: Sequence[tuple[str, Sequence[tuple[str, Sequence[int]]]]], title: str) -> Figure:
    """Active units per layer as stacked bars: one panel per group, one bar per (label, counts per layer)."""
    n = max(1, len(groups))
    fig = Figure(figsize=(max(8.8, 4.4 * n), 3.6))
    for i, (panel_title, bars) in enumerate(groups, 1):
        ax = fig.add_subplot(1, n, i)
        depth = max((len(c) for _, c in bars), default=0)
        x = np.arange(len(bars))
        bottom = np.zeros(len(bars))
        for layer in range(depth):
            heights = np.array([c[layer] if layer < len(c) else 0 for _, c in bars], dtype=float)
            ax.bar(x, heights, bottom=bottom, label=f"layer {layer + 1}", color=f"C{layer}")
            bottom += heights
        ax.set_xticks(x, [label for label, _ in bars], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("active units")
        ax.set_title(panel_title, fontsize=10)
        if depth > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
