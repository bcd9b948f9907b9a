"""Output of the diagnostics: PNG files under ``<run_dir>/figures/`` and images/histograms for loggers.

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

from ...diagnostics.figures import DPI, run_title
from ..loggers import run_directory


def figure_dir(trainer: pl.Trainer) -> Path:
    """``<run_dir>/figures`` (see ``run_directory``), created; safe to call on rank 0 alone."""
    path = Path(run_directory(trainer)) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_name(trainer: pl.Trainer) -> str:
    """``<name>/<version>`` of the run (the last two parts of its directory), e.g. ``diagnostics/version_0``."""
    path = Path(run_directory(trainer))
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def figure_title(trainer: pl.Trainer, pl_module: pl.LightningModule, what: str,
                 epoch: int | str | None = None) -> str:
    """The title of a run's figure: what it shows, the run, its objective with M and K, the epoch."""
    hp = getattr(pl_module, "hparams", {})  # any module the callbacks work with, not only IWAEModule
    M, K = getattr(getattr(pl_module, "objective", None), "sample_shape", (hp.get("M"), hp.get("K")))
    epoch = trainer.current_epoch if epoch is None else epoch
    return run_title(run_name(trainer), hp.get("objective"), M, K, epoch, what)


def save_figure(trainer: pl.Trainer, fig: Figure, name: str) -> Path | None:
    """Save ``fig`` as ``<figure_dir>/<name>.png`` on rank 0 (``DPI``, uncropped: the style's width); the
    title also goes into the PNG's ``Title`` text field. Returns the path (None on other ranks)."""
    if not trainer.is_global_zero:
        return None
    path = figure_dir(trainer) / f"{name}.png"
    fig.savefig(path, dpi=DPI, metadata={"Title": fig.get_suptitle()})
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
