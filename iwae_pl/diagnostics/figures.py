"""Figures of the diagnostics as matplotlib ``Figure`` objects (the object API, never pyplot: no global
backend state is touched). Saving and sending them to loggers is Lightning glue (``lightning/callbacks/_figures``);
the ``plot`` command (``iwae_pl.runs.plot``) draws the same figures from runs' metrics.csv.

One style for all: ``WIDTH`` inches wide (at ``DPI``, ``WIDTH * DPI`` >= 800 pixels), a title naming the
run, labelled axes, and a legend only in panels with more than one line.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

WIDTH = 10.0  # inches; saved at DPI without cropping, a PNG is 1000 pixels wide
HEIGHT = 3.4
DPI = 100

# A line of a curve panel: (label, x [n], y [n]); a panel: (ylabel, lines, log_y).
Line = tuple[str, Sequence[float], Sequence[float]]
Panel = tuple[str, Sequence[Line], bool]


def run_title(run: str, objective: str | None = None, M: int | None = None, K: int | None = None,
              epoch: int | str | None = None, what: str = "") -> str:
    """``"<what> - <run>: IWAE (M=1, K=5), epoch 59"``: the title every figure of a run carries."""
    parts = [f"{what} - {run}" if what else run]
    if objective:
        parts.append(f": {objective.upper()}" + (f" (M={M}, K={K})" if M is not None and K is not None else ""))
    if epoch is not None:
        parts.append(f", epoch {epoch}" if isinstance(epoch, int) else f", {epoch}")
    return "".join(parts)


def _figure(panels: int, title: str, height: float = HEIGHT) -> Figure:
    fig = Figure(figsize=(max(WIDTH, 3.6 * panels), height))
    fig.suptitle(title, fontsize=11)
    return fig


def histogram_figure(panels: list[tuple[str, np.ndarray, np.ndarray]], xlabel: str, title: str,
                     threshold: float | None = None, ylabel: str = "count") -> Figure:
    """One bar-histogram panel per (panel title, counts [n], edges [n + 1]), side by side, with an optional
    dashed vertical line at ``threshold`` (in the same units as the edges); ``title`` names the run."""
    fig = _figure(len(panels), title)
    for i, (panel_title, counts, edges) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.stairs(counts, edges, fill=True, alpha=0.8)
        if threshold is not None:
            ax.axvline(threshold, color="k", linestyle="--", linewidth=1)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def curves_figure(panels: Sequence[Panel], title: str, xlabel: str = "epoch") -> Figure:
    """One panel per (ylabel, lines, log_y), side by side; each line is (label, x, y). A panel shows a
    legend only when it has more than one line (a single line's label, if any, titles its panel)."""
    fig = _figure(len(panels), title)
    for i, (ylabel, lines, log_y) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for j, (label, x, y) in enumerate(lines):
            ax.plot(x, y, ["-", "--", ":", "-."][j % 4], marker="." if len(x) < 30 else None, label=label)
        if log_y:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(lines) > 1:
            ax.legend(fontsize=8)
        elif lines and lines[0][0]:  # a single named line: its name over the panel instead of a legend
            ax.set_title(lines[0][0], fontsize=9)
    fig.tight_layout()
    return fig


def image_figure(grid: np.ndarray, title: str, row_labels: Sequence[str] = (), rows: int = 0) -> Figure:
    """A gray image grid [H, W] (values in [0, 1], 1 = white) under ``title``. With ``row_labels``, the
    ``rows`` rows of tiles are labelled on the left in turn (e.g. original / reconstruction)."""
    # tall enough that the image spans most of the width (the saved PNG is not cropped)
    fig = _figure(1, title, height=WIDTH * 0.85 * grid.shape[0] / grid.shape[1] + 0.7)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    if row_labels and rows:
        step = grid.shape[0] / rows
        ax.set_yticks([(r + 0.5) * step for r in range(rows)],
                      [row_labels[r % len(row_labels)] for r in range(rows)], fontsize=8)
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    fig.tight_layout()
    return fig
