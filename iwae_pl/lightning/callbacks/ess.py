"""Effective sample size of the importance weights (section 5.5 of the reproduction report).

For one data point with importance weights w_1..w_n, k_e = (sum w)^2 / sum w^2 = 1 / sum w~^2, with
w~ = softmax(log w) the normalized weights: n when all weights are equal, 1 when one dominates.
``EffectiveSampleSize`` reads the training step's log-weights [M, K, B] (at beta = 1), so it costs no
extra network pass; for the VAE the weights are computed but not used by the gradient, and the ESS
is still reported, as in the report.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import Callback

from ...diagnostics.ess import ess_stats, weight_histogram
from ...diagnostics.figures import curves_figure, histogram_figure
from ...errors import ConfigError, check_float, check_int
from ..metrics import Sums
from ._common import epoch_due, log_global
from ._figures import figure_title, log_histogram, save_figure

LOG10_W_MIN = -10.0  # left edge of the weight histogram; smaller normalized weights go in the first bin
HIST_BINS = 50


class EffectiveSampleSize(Callback):
    """Epoch means of the ESS of the training batches' importance weights, DDP-correct.

    Logged at the end of every training epoch (means over the data points seen in the epoch, the
    sums and counts reduced across processes): ``ess/group`` (ESS among the K samples of each of the
    M groups, averaged over groups; for M = 1 this is the IWAE(K) ESS), ``ess/all`` (ESS over all M*K
    samples), ``ess/above_threshold`` (number of group-normalized weights above ``threshold``,
    averaged over groups). Every ``histogram_every_n_epochs`` epochs (and after the last), the
    distribution of the normalized weights over the epoch goes to TensorBoard / W&B as
    ``ess/log10_weights`` and to ``<log_dir>/figures/ess_weights_epoch{E}.png`` (report Figure 7), and
    the ESS history so far to ``<log_dir>/figures/ess_curve.png`` (report Figure 5).

    Args:
        threshold: normalized weight above which a sample counts in ``ess/above_threshold`` (1e-2).
        histogram_every_n_epochs: epochs between weight histograms (0 = never).
    """

    def __init__(self, threshold: float = 1e-2, histogram_every_n_epochs: int = 10):
        self.threshold = check_float("ESS threshold", threshold, 0.0, 1.0, low_open=True)
        self.histogram_every_n_epochs = check_int("histogram_every_n_epochs", histogram_every_n_epochs, 0)
        self.edges = torch.linspace(LOG10_W_MIN, 0.0, HIST_BINS + 1, dtype=torch.float64)
        self.history: list[dict[str, float]] = []  # epoch means so far (rank 0's view; saved in checkpoints)
        self._sums: Sums | None = None  # (count, sum group, sum all, sum above) [4] and the histogram
        self._M = 1  # outer samples of the latest batch's log-weights [M, K, B]

    def _histogram_due(self, trainer: pl.Trainer) -> bool:
        return self.histogram_every_n_epochs > 0 and epoch_due(trainer, self.histogram_every_n_epochs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        shapes = {"sums": (4,), **({"hist": (HIST_BINS,)} if self._histogram_due(trainer) else {})}
        self._sums = Sums(shapes).to(pl_module.device)
        self._edges = self.edges.to(pl_module.device)  # once per epoch, not per batch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        log_w = outputs.get("log_w") if isinstance(outputs, dict) else None
        if log_w is None:
            raise ConfigError("EffectiveSampleSize needs training_step to return "
                              "{'loss': ..., 'log_w': [M, K, B]}")
        self._M = log_w.shape[0]
        s = ess_stats(log_w, self.threshold)
        per_point = [torch.ones_like(s["group"]), s["group"], s["all"], s["above_threshold"]]
        update = {"sums": torch.stack(per_point).sum(1)}
        if "hist" in self._sums.names:
            update["hist"] = weight_histogram(log_w, self._edges)
        self._sums.update(**update)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        totals = self._sums.compute()
        n, group, all_, above = totals["sums"].tolist()
        if n == 0:
            return
        means = {"ess/group": group / n, "ess/all": all_ / n, "ess/above_threshold": above / n}
        log_global(pl_module, means)
        self.history.append({"epoch": trainer.current_epoch, **means})
        if "hist" in totals and trainer.is_global_zero:
            self._plot(trainer, pl_module, totals["hist"].cpu().numpy())

    def _plot(self, trainer: pl.Trainer, pl_module: pl.LightningModule, counts: np.ndarray) -> None:
        edges = self.edges.numpy()
        log_histogram(trainer, "ess/log10_weights", counts, edges)
        panel = f"all samples of the epoch (first bin: <= 1e{LOG10_W_MIN:.0f})"
        fig = histogram_figure([(panel, counts, edges)], r"$\log_{10} \tilde w$ (dashed: threshold)",
                               figure_title(trainer, pl_module, "normalized importance weights"),
                               threshold=math.log10(self.threshold), ylabel="samples")
        save_figure(trainer, fig, f"ess_weights_epoch{trainer.current_epoch:04d}")
        save_figure(trainer, self.curve_figure(figure_title(trainer, pl_module, "ESS during training"), self._M),
                    "ess_curve")

    def curve_figure(self, title: str, M: int = 1) -> Figure:
        """ESS epoch means so far against the epoch (two panels: ESS, weights above threshold); the
        ESS over all M*K samples is a second line only when M > 1 (it equals the per-group one at M = 1)."""
        epochs = [h["epoch"] for h in self.history]
        ess = [("per group of K", epochs, [h["ess/group"] for h in self.history])]
        if M > 1:
            ess.append(("over all M*K", epochs, [h["ess/all"] for h in self.history]))
        above = [("", epochs, [h["ess/above_threshold"] for h in self.history])]
        return curves_figure([("effective sample size", ess, False),
                              (f"weights > {self.threshold:g} per group", above, False)], title)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
