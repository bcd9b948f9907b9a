"""Figures of the diagnostics as matplotlib ``Figure`` objects (the object API, never pyplot: no global
backend state is touched). Saving and sending them to loggers is Lightning glue (``lightning/callbacks/_figures``).
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def histogram_figure(panels: list[tuple[str, np.ndarray, np.ndarray]], xlabel: str,
                     threshold: float | None = None, ylabel: str = "count") -> Figure:
    """One bar-histogram panel per (title, counts [n], edges [n + 1]), side by side, with an optional
    dashed vertical line at ``threshold`` (in the same units as the edges)."""
    fig = Figure(figsize=(3.6 * len(panels), 2.8))
    for i, (title, counts, edges) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.stairs(counts, edges, fill=True, alpha=0.8)
        if threshold is not None:
            ax.axvline(threshold, color="k", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        if i == 0:
            ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig
