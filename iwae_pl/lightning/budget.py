"""Say at the start of ``fit`` when a run's budget means it will never validate or never keep a best checkpoint.

A paper config validates every 10 epochs; ``--trainer.max_epochs 1`` on it trains, but never logs
``val/nll`` and ModelCheckpoint(monitor="val/nll") never writes a best checkpoint. Lightning says
nothing about it, so ``BudgetCheck`` prints one line to stderr (rank 0) before the first step.
"""
from __future__ import annotations

import math
import sys

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint


def _epochs_in_budget(trainer: pl.Trainer) -> float:
    """Training epochs the run will start: max_epochs, or fewer if max_steps ends it first (inf: unbounded)."""
    epochs = math.inf
    if trainer.max_epochs is not None and trainer.max_epochs >= 0:
        epochs = trainer.max_epochs
    batches = trainer.num_training_batches
    if trainer.max_steps is not None and trainer.max_steps > 0 and math.isfinite(batches) and batches > 0:
        steps_per_epoch = max(1, math.ceil(batches / max(1, trainer.accumulate_grad_batches)))
        epochs = min(epochs, math.ceil(trainer.max_steps / steps_per_epoch))
    return epochs


def _val_monitors(trainer: pl.Trainer) -> list[str]:
    """Names of the validation metrics that ModelCheckpoint / EarlyStopping callbacks monitor."""
    names = []
    for cb in trainer.callbacks:
        monitor = getattr(cb, "monitor", None) if isinstance(cb, (ModelCheckpoint, EarlyStopping)) else None
        if monitor and str(monitor).startswith("val/"):
            names.append(str(monitor))
    return names


def budget_warnings(trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str]:
    """One-line warnings (possibly none) about validation that the run's budget or settings rule out.

    Call once the training loader is known (``on_train_start``): ``max_steps`` is converted to epochs
    with ``trainer.num_training_batches``.
    """
    monitors = _val_monitors(trainer)
    consequence = (f"; no best checkpoint: {', '.join(sorted(set(monitors)))} is never logged" if monitors
                   else "")
    limit = trainer.limit_val_batches
    if limit is not None and limit == 0:
        return [f"this run never validates (limit_val_batches={limit}){consequence}"]
    every = trainer.check_val_every_n_epoch
    epochs = _epochs_in_budget(trainer)
    if every is not None and epochs < every:
        return [f"this run never validates: it trains {epochs} epoch(s) and validates every {every} "
                f"(check_val_every_n_epoch){consequence}; set --trainer.check_val_every_n_epoch {max(1, epochs)}"]
    val_k = pl_module.hparams.get("val_k") if hasattr(pl_module, "hparams") else None
    if val_k == 0 and "val/nll" in monitors:
        return ["val/nll is never logged (model.val_k=0); no best checkpoint: monitor val/bound or set "
                "--model.val_k 100"]
    return []


class BudgetCheck(Callback):
    """Prints ``budget_warnings`` to stderr on global rank 0 when training starts (the CLI adds it to fit)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.messages = budget_warnings(trainer, pl_module)
        if trainer.is_global_zero:
            for message in self.messages:
                print(f"iwae_pl: warning: {message}", file=sys.stderr, flush=True)
