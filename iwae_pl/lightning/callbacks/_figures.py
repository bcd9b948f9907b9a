"""Output of the diagnostics: PNG files under ``<log_dir>/figures/`` and images/histograms for loggers.

Only global rank 0 writes (callers may call these on every rank). Loggers that cannot take a histogram
or an image (e.g. CSVLogger) are skipped; TensorBoard and Weights & Biases are supported. Figures use
matplotlib's object API (``Figure``), never pyplot, so no global backend state is touched.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from ..loggers import run_directory


def figure_dir(trainer: pl.Trainer) -> Path:
    """``<run_dir>/figures`` (see ``run_directory``), created; safe to call on rank 0 alone."""
    path = Path(run_directory(trainer)) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(trainer: pl.Trainer, fig: Figure, name: str, dpi: int = 80) -> Path | None:
    """Save ``fig`` as ``<figure_dir>/<name>.png`` on rank 0; returns the path (None on other ranks)."""
    if not trainer.is_global_zero:
        return None
    path = figure_dir(trainer) / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def save_image(trainer: pl.Trainer, image: np.ndarray, name: str) -> Path | None:
    """Save a gray image [H, W] with values in [0, 1] (1 = white) as ``<figure_dir>/<name>.png``."""
    if not trainer.is_global_zero:
        return None
    from matplotlib.image import imsave

    path = figure_dir(trainer) / f"{name}.png"
    imsave(path, image, cmap="gray", vmin=0.0, vmax=1.0)
    return path


def log_image(trainer: pl.Trainer, tag: str, image: np.ndarray) -> None:
    """Send a gray image [H, W] in [0, 1] to every logger that takes images."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image[None], trainer.global_step, dataformats="CHW")
        elif isinstance(logger, WandbLogger):
            logger.log_image(tag, [image], step=trainer.global_step)


def log_histogram(trainer: pl.Trainer, tag: str, counts: np.ndarray, edges: np.ndarray) -> None:
    """Send a histogram (``counts`` [n], bin ``edges`` [n + 1]) to every logger that takes histograms."""
    counts, edges = np.asarray(counts, dtype=np.float64), np.asarray(edges, dtype=np.float64)
    if not trainer.is_global_zero or counts.sum() <= 0:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            centers = 0.5 * (edges[1:] + edges[:-1])
            used = np.nonzero(counts)[0]
            logger.experiment.add_histogram_raw(
                tag, min=float(edges[used[0]]), max=float(edges[used[-1] + 1]), num=int(counts.sum()),
                sum=float((counts * centers).sum()), sum_squares=float((counts * centers ** 2).sum()),
                bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(),
                global_step=trainer.global_step)
        elif isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({tag: wandb.Histogram(np_histogram=(counts, edges))}, step=trainer.global_step)
