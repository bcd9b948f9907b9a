"""The workloads the small benchmark scripts (``op_profile.py``, ``fast_vs_plain.py``) time: a training
step of IWAENetwork + objective + Adam in a hand loop on binarized MNIST, and the first test points."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import iwae_pl

DATA = Path(os.environ.get("IWAE_PL_DATA_DIR", "/work/shared/data"))


def training_step(layers=iwae_pl.BURDA_2_LAYER, K: int = 50, fast: bool = True, dm=None) -> Callable[[], None]:
    """One Adam step of IWAE K (batch 20) per call, from Glorot init (seed 0), on the next training batch."""
    from iwae_pl.data import BinarizedDataModule
    from iwae_pl.lightning.module import adam
    if dm is None:
        dm = BinarizedDataModule(dataset="binarized_mnist", data_dir=str(DATA), batch_size=20, seed=0, download=False)
        dm.setup("fit")
    torch.manual_seed(0)
    net = iwae_pl.IWAENetwork(784, layers, fast=fast)
    net.set_visible_bias(dm.train_mean())
    objective = iwae_pl.make_objective("iwae", 1, K)
    opt = adam([{"params": net.parameters()}], lr=1e-3, betas=(0.9, 0.999), eps=1e-4)

    def batches():
        while True:
            yield from dm.train_dataloader()
    it = batches()

    def step() -> None:
        x, _ = next(it)
        loss = -objective.estimate(net, x).surrogate.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def test_points(n: int) -> torch.Tensor:
    """The first n points of Larochelle's binarized-MNIST test split, [n, 784] float32."""
    with np.load(DATA / "binarized_mnist" / "binarized_mnist_uint8.npz") as z:
        return torch.from_numpy(z["test"][:n].astype(np.float32))
