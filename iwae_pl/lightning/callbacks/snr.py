"""Gradient signal-to-noise ratio (Rainforth et al. 2018, "Tighter variational bounds are not
necessarily better").

SNR(theta) = |E[g(theta)] / std[g(theta)]| for each scalar parameter theta, where g is the objective's
stochastic gradient estimate on a fixed batch and the expectation is over the sampling noise only.
For IWAE(K) the theory gives SNR(decoder) = O(sqrt(K)) but SNR(encoder) = O(1 / sqrt(K)): tighter
bounds starve the encoder of signal.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from ... import rng
from ...diagnostics.figures import curves_figure
from ...diagnostics.snr import gradient_snr
from ...errors import check_choice, check_int
from ._common import SOURCES, epoch_due, fixed_examples, log_global
from ._figures import figure_title, save_figure


class GradientSNR(Callback):
    """Logs ``snr/encoder`` and ``snr/decoder`` (see ``gradient_snr``) every ``every_n_epochs`` epochs,
    for the module's own objective and estimator (``pl_module.objective``), at beta = 1, and draws
    their history so far in ``<run_dir>/figures/snr_curve.png`` (log scale).

    The batch is fixed: the first ``batch_size`` examples of ``source`` (binarized once with ``seed``),
    and the noise of every measurement comes from a private generator seeded with ``seed``, so values
    at different epochs differ only through the parameters. Training is left untouched: no optimizer
    state, no ``.grad``, the train/eval mode restored and the global RNG stream not advanced. Every
    process computes the same (deterministic) values, so no communication is needed under DDP.

    Args:
        every_n_epochs: training epochs between measurements (also after the last epoch).
        num_estimates: R, gradient estimates per measurement (Rainforth et al.: 1000 or more; 100 is
            enough to see the O(sqrt(K)) trends).
        batch_size: data points in the fixed batch (default 20, the training batch of the paper).
        source: ``val`` (default), ``train`` or ``test``.
        seed: seeds the batch's binarization and the noise.
    """

    def __init__(self, every_n_epochs: int = 1, num_estimates: int = 100, batch_size: int = 20,
                 source: str = "val", seed: int = 0):
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs)
        self.num_estimates = check_int("num_estimates", num_estimates, 2)
        self.batch_size = check_int("batch_size", batch_size)
        self.source = check_choice("SNR source", source, SOURCES)
        self.seed = check_int("seed", seed, 0)
        self.history: list[dict[str, float]] = []  # measurements so far (saved in checkpoints)

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        net = pl_module.net
        param = next(net.parameters())
        x = fixed_examples(trainer, self.source, self.batch_size, self.seed)[0].to(param)  # the same batch each time
        generator = rng.generator(self.seed, "snr", device=param.device)
        was_training = net.training
        net.train()  # the mode the training step differentiates in
        try:
            with torch.enable_grad():
                return gradient_snr(net, pl_module.objective, x, self.num_estimates, generator)
        finally:
            net.train(was_training)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if epoch_due(trainer, self.every_n_epochs):
            snr = {f"snr/{k}": v for k, v in self.measure(trainer, pl_module).items()}
            log_global(pl_module, snr)
            self.history.append({"epoch": trainer.current_epoch, **snr})
            if trainer.is_global_zero:
                title = figure_title(trainer, pl_module, f"gradient SNR on {self.batch_size} {self.source} examples")
                save_figure(trainer, self.curve_figure(title), "snr_curve")

    def curve_figure(self, title: str):
        """Encoder and decoder SNR so far against the epoch, one panel, log scale."""
        epochs = [h["epoch"] for h in self.history]
        lines = [(part, epochs, [h[f"snr/{part}"] for h in self.history]) for part in ("encoder", "decoder")]
        return curves_figure([("gradient SNR (mean over parameters)", lines, True)], title)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
