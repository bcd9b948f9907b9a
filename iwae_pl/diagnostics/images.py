"""Image grids of the model: samples from the generative model and reconstructions of fixed digits."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..model.network import IWAENetwork


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


def image_grid(images: Tensor, ncol: int, pad: int = 1, min_side: int = 256) -> np.ndarray:
    """Tile images [N, H, W] (values in [0, 1]) row by row into one [H', W'] array, with ``pad`` pixels
    of mid-gray between tiles, enlarged by an integer factor until the short side is >= ``min_side``."""
    n, h, w = images.shape
    nrow = -(-n // ncol)
    grid = torch.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), 0.5)
    for i, img in enumerate(images.detach().float().cpu()):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
    scale = max(1, -(-min_side // min(grid.shape)))
    return grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
