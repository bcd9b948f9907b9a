"""Image grids of the model: samples from the generative model and reconstructions of fixed digits."""
from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from ... import rng
from ...diagnostics.images import image_grid, interleave_rows, model_samples, reconstructions
from ...errors import ConfigError, check_choice, check_int
from ._common import SOURCES, epoch_due, fixed_examples
from ...diagnostics.figures import image_figure
from ._figures import figure_title, log_image, save_figure


def image_shape(trainer: pl.Trainer, input_dim: int) -> tuple[int, int]:
    """``trainer.datamodule.image_shape``; without one, square images if D is a square number."""
    shape = getattr(getattr(trainer, "datamodule", None), "image_shape", None)
    if shape is not None:
        return tuple(shape)
    side = math.isqrt(input_dim)
    if side * side != input_dim:
        raise ConfigError(f"SampleImages needs datamodule.image_shape: {input_dim} pixels are not a "
                          "square image")
    return side, side


class SampleImages(Callback):
    """Every ``every_n_epochs`` training epochs (and after the last), writes

    - ``<log_dir>/figures/samples_epoch{E}.png``: ``num_samples`` model samples, shown as pixel
      probabilities p(x = 1 | h1) with h1 from ``net.sample_prior`` (private generator, same noise every
      time, so the grids of successive epochs are comparable);
    - ``<log_dir>/figures/reconstructions_epoch{E}.png``: the first ``num_reconstructions`` examples
      of ``source``, each row of originals followed by the row of their reconstructions
      p(x = 1 | h1 = E_q[h1 | x]), the rows labelled ``original`` / ``reconstruction``;

    and sends both to TensorBoard (``add_image``) / W&B (``log_image``) as ``images/samples`` and
    ``images/reconstructions``. The image shape is ``trainer.datamodule.image_shape`` (square if absent).

    Args:
        every_n_epochs: Training epochs between grids (also drawn after the last epoch).
        num_samples: Model samples in the samples grid (0 turns it off).
        num_reconstructions: Examples in the reconstructions grid (0 turns it off).
        ncol: Images per grid row.
        source: Split the reconstructed examples come from: ``val``, ``train`` or ``test``.
        seed: Seeds the samples and the binarization of the examples.
    """

    def __init__(self, every_n_epochs: int = 10, num_samples: int = 64, num_reconstructions: int = 16,
                 ncol: int = 8, source: str = "val", seed: int = 0):
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs)
        self.num_samples = check_int("num_samples", num_samples, 0)
        self.num_reconstructions = check_int("num_reconstructions", num_reconstructions, 0)
        self.ncol = check_int("ncol", ncol)
        self.source = check_choice("images source", source, SOURCES)
        self.seed = check_int("seed", seed, 0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and epoch_due(trainer, self.every_n_epochs):
            self.draw(trainer, pl_module, f"epoch{trainer.current_epoch:04d}")

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, tag: str) -> None:
        net = pl_module.net
        shape = image_shape(trainer, net.input_dim)
        param = next(net.parameters())
        was_training = net.training
        net.eval()
        try:
            if self.num_samples:
                generator = rng.generator(self.seed, "images", device=param.device)
                probs = model_samples(net, self.num_samples, generator).view(-1, *shape)
                title = figure_title(trainer, pl_module, "samples p(x=1|h), h from the prior")
                self._emit(trainer, "samples", image_grid(probs, self.ncol), tag, title)
            if self.num_reconstructions:
                x = fixed_examples(trainer, self.source, self.num_reconstructions, self.seed)[0].to(param)
                recon = reconstructions(net, x).view(-1, *shape)
                tiles = interleave_rows(x.view(-1, *shape), recon, self.ncol)
                title = figure_title(trainer, pl_module, f"reconstructions p(x=1|E_q[h|x]) of {self.source} examples")
                rows = 2 * math.ceil(len(x) / self.ncol)
                self._emit(trainer, "reconstructions", image_grid(tiles, self.ncol), tag, title,
                           ("original", "reconstruction"), rows)
        finally:
            net.train(was_training)

    @staticmethod
    def _emit(trainer: pl.Trainer, kind: str, grid: np.ndarray, tag: str, title: str,
              row_labels: tuple[str, ...] = (), rows: int = 0) -> None:
        """The PNG gets a titled figure (rows labelled); loggers get the bare grid."""
        if trainer.is_global_zero:
            save_figure(trainer, image_figure(grid, title, row_labels, rows), f"{kind}_{tag}")
        log_image(trainer, f"images/{kind}", grid)
