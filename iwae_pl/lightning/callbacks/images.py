"""Image grids of the model: samples from the generative model and reconstructions of fixed digits."""
from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from ...errors import ConfigError
from ...model.network import IWAENetwork
from ._common import SOURCES, check_choice, check_int, epoch_due, fixed_examples
from ._figures import image_grid, log_image, save_image


@torch.no_grad()
def model_samples(net: IWAENetwork, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Pixel probabilities p(x = 1 | h1) of n ancestral samples h1 ~ p(h1): [n, D]."""
    return net.decode_probs(net.sample_prior(n, generator=generator))


@torch.no_grad()
def reconstructions(net: IWAENetwork, x: Tensor) -> Tensor:
    """p(x = 1 | h1) at the posterior mean h1 = E_q[h1 | x] of each data point x [N, D]: [N, D]."""
    return net.decode_probs(net.posterior_means(x, "mean")[0])


def interleave_rows(originals: Tensor, recons: Tensor, ncol: int) -> Tensor:
    """[N, ...] originals and reconstructions -> [2 * ceil(N / ncol) * ncol, ...] in grid order: each row of
    ``ncol`` originals is followed by the row of their reconstructions (blank tiles pad the last row)."""
    n = len(originals)
    nrow = math.ceil(n / ncol)
    pad = nrow * ncol - n
    blank = torch.full((pad, *originals.shape[1:]), 0.5, dtype=originals.dtype)
    rows_o = torch.cat([originals.cpu(), blank]).view(nrow, ncol, *originals.shape[1:])
    rows_r = torch.cat([recons.cpu(), blank]).view(nrow, ncol, *originals.shape[1:])
    return torch.stack([rows_o, rows_r], 1).flatten(0, 2)


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
      p(x = 1 | h1 = E_q[h1 | x]);

    and sends both to TensorBoard (``add_image``) / W&B (``log_image``) as ``images/samples`` and
    ``images/reconstructions``. The image shape is ``trainer.datamodule.image_shape`` (square if absent).

    Args:
        every_n_epochs: training epochs between grids. num_samples, num_reconstructions: grid sizes
            (0 turns one off). ncol: images per grid row. source: where the reconstructed examples come
            from (``val`` default). seed: seeds the samples and the binarization of the examples.
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
        net: IWAENetwork = pl_module.net
        shape = image_shape(trainer, net.input_dim)
        param = next(net.parameters())
        was_training = net.training
        net.eval()
        try:
            if self.num_samples:
                generator = torch.Generator(device=param.device).manual_seed(self.seed)
                probs = model_samples(net, self.num_samples, generator).view(-1, *shape)
                self._emit(trainer, "samples", image_grid(probs, self.ncol), tag)
            if self.num_reconstructions:
                x = fixed_examples(trainer, self.source, self.num_reconstructions, self.seed)[0].to(param)
                recon = reconstructions(net, x).view(-1, *shape)
                tiles = interleave_rows(x.view(-1, *shape), recon, self.ncol)
                self._emit(trainer, "reconstructions", image_grid(tiles, self.ncol), tag)
        finally:
            net.train(was_training)

    @staticmethod
    def _emit(trainer: pl.Trainer, kind: str, grid: np.ndarray, tag: str) -> None:
        save_image(trainer, grid, f"{kind}_{tag}")
        log_image(trainer, f"images/{kind}", grid)
