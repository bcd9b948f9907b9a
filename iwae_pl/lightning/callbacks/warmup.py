"""Warm-up of the latent terms (Sønderby et al. 2016): log w = log p(x|h) + beta (log p(h) - log q(h|x)).

``BetaWarmup`` sets ``pl_module.warmup_beta`` before every training epoch (or step) from a schedule
of training progress, and logs it as ``warmup/beta``. The module uses beta only for the training
gradient; the reported bounds and all evaluation stay at beta = 1. Because beta is a pure function
of the epoch / step counters, a run resumed from a checkpoint continues the schedule exactly.
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from ...errors import ConfigError, check_choice, check_float, check_int
from ..module import logger_writes_this_step

SCHEDULES = ("linear", "sigmoid", "cosine", "constant")
INTERVALS = ("epoch", "step")


class BetaWarmup(Callback):
    """beta = start + (end - start) * f(progress), progress = t / duration clipped to [0, 1].

    Shapes f: ``linear`` f(p) = p (Sønderby's, the default); ``cosine`` f(p) = (1 - cos(pi p)) / 2;
    ``sigmoid`` a logistic curve of slope ``steepness`` centred at p = 0.5, rescaled so that
    f(0) = 0 and f(1) = 1; ``constant`` f = 0, i.e. beta = ``start`` for the whole run (a fixed
    temperature). After the warm-up beta stays at ``end``.

    Args:
        schedule: one of ``linear``, ``sigmoid``, ``cosine``, ``constant``.
        start: beta at the beginning of the warm-up (>= 0; usually 0).
        end: beta at the end of the warm-up and after it (>= 0; usually 1).
        epochs: Warm-up length in epochs; null means 200 (Sønderby's MNIST setting) unless
            ``steps`` is given.
        steps: Warm-up length in optimizer steps (give ``epochs`` or ``steps``, not both).
        interval: How often beta is updated: ``epoch`` (at the start of each epoch, t = epoch) or
            ``step`` (before every batch; t = global step, or the fractional epoch when the length
            is in epochs); null means ``step`` if ``steps`` is given, else ``epoch``.
        steepness: slope of the ``sigmoid`` schedule.
    """

    def __init__(self, schedule: str = "linear", start: float = 0.0, end: float = 1.0,
                 epochs: int | None = None, steps: int | None = None, interval: str | None = None,
                 steepness: float = 10.0):
        self.schedule = check_choice("warm-up schedule", schedule, SCHEDULES)
        self.start = check_float("warm-up start", start, 0.0)
        self.end = check_float("warm-up end", end, 0.0)
        if epochs is not None and steps is not None:
            raise ConfigError(f"give the warm-up length in epochs or in steps, not both "
                              f"(epochs={epochs}, steps={steps})")
        self.steps = None if steps is None else check_int("warm-up steps", steps)
        if self.steps is None:
            self.epochs = check_int("warm-up epochs", 200 if epochs is None else epochs)
        else:
            self.epochs = None
        default_interval = "step" if self.steps is not None else "epoch"
        interval = default_interval if interval is None else interval
        self.interval = check_choice("warm-up interval", interval, INTERVALS)
        if self.interval == "epoch" and self.steps is not None:
            raise ConfigError(f"warm-up interval 'epoch' needs the length in epochs, got steps={steps}")
        self.steepness = check_float("warm-up steepness", steepness, 0.0, low_open=True)

    # --- the schedule -----------------------------------------------------------------------------
    def shape(self, progress: float) -> float:
        """f(progress) in [0, 1] for progress in [0, 1] (clipped)."""
        p = min(max(progress, 0.0), 1.0)
        if self.schedule == "linear":
            return p
        if self.schedule == "cosine":
            return 0.5 * (1.0 - math.cos(math.pi * p))
        if self.schedule == "sigmoid":
            s = lambda u: 1.0 / (1.0 + math.exp(-self.steepness * (u - 0.5)))  # noqa: E731
            return (s(p) - s(0.0)) / (s(1.0) - s(0.0))
        return 0.0  # constant

    def beta_at(self, progress: float) -> float:
        return self.start + (self.end - self.start) * self.shape(progress)

    def progress(self, trainer: pl.Trainer, batch_idx: int = 0) -> float:
        """Warm-up progress t / duration (not clipped) at the current epoch / step."""
        if self.steps is not None:
            return trainer.global_step / self.steps
        t = float(trainer.current_epoch)
        if self.interval == "step":
            batches = trainer.num_training_batches
            if not math.isfinite(batches) or batches <= 0:
                raise ConfigError("per-step warm-up over epochs needs a sized training loader; "
                                  "give steps= instead")
            t += batch_idx / batches
        return t / self.epochs

    # --- hooks ------------------------------------------------------------------------------------
    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch_idx: int) -> float:
        beta = self.beta_at(self.progress(trainer, batch_idx))
        pl_module.warmup_beta = beta
        return beta

    # One log call per epoch, or per step only on the steps the loggers write (self.log is not free).
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.interval == "epoch":
            beta = self._apply(trainer, pl_module, 0)
            pl_module.log("warmup/beta", float(beta), on_step=False, on_epoch=True, batch_size=1)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch,
                             batch_idx: int) -> None:
        if self.interval == "step":
            beta = self._apply(trainer, pl_module, batch_idx)
            if logger_writes_this_step(trainer):
                pl_module.log("warmup/beta", float(beta), on_step=True, on_epoch=False, batch_size=1)
