"""What the benchmark scripts (``bench.py``, ``op_profile.py``, ``fast_vs_plain.py``) share: the optimizer
and the Adam step of a hand training loop, the binarized-MNIST data, and a training-step workload of
IWAENetwork + objective + Adam."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

import iwae_pl

DATA = Path(os.environ.get("IWAE_PL_DATA_DIR", "/work/shared/data"))


def optimizer(params):
    """The optimizer of IWAEModule.configure_optimizers, for every variant alike."""
    from iwae_pl.lightning.module import adam
    return adam([{"params": params}], lr=1e-3, betas=(0.9, 0.999), eps=1e-4)


def adam_step(loss_fn: Callable[[torch.Tensor], torch.Tensor], params,
              autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
    """step(x): the loss of batch x (under ``autocast()``), backward, one ``optimizer`` step."""
    opt = optimizer(params)

    def step(x: torch.Tensor) -> None:
        with autocast():
            loss = loss_fn(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def mnist(data_dir: Path = DATA, batch_size: int = 20):
    """Larochelle's binarized MNIST (batch 20, seed 0), set up for fit."""
    from iwae_pl.data import BinarizedDataModule
    dm = BinarizedDataModule(dataset="binarized_mnist", data_dir=str(data_dir), batch_size=batch_size, seed=0,
                             download=False)
    dm.setup("fit")
    return dm


def batches(dm, device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """The training batches x of ``dm``, epoch after epoch, on ``device``."""
    while True:
        for x, _ in dm.train_dataloader():
            yield x.to(device)


def test_split(data_dir: Path = DATA) -> np.ndarray:
    """The binarized-MNIST test split, [10000, 784] uint8."""
    with np.load(data_dir / "binarized_mnist" / "binarized_mnist_uint8.npz") as z:
        return z["test"]


def training_step(layers=iwae_pl.BURDA_2_LAYER, fast: bool = True, dm=None) -> Callable[[], None]:
    """One Adam step of IWAE K = 50 (batch 20) per call, from Glorot init (seed 0), on the next batch."""
    dm = mnist() if dm is None else dm
    torch.manual_seed(0)
    net = iwae_pl.IWAENetwork(784, layers, fast=fast)
    net.set_visible_bias(dm.train_mean())
    objective = iwae_pl.make_objective("iwae", 1, 50)
    step, it = adam_step(lambda x: -objective.estimate(net, x).surrogate.mean(), net.parameters()), batches(dm)
    return lambda: step(next(it))


def test_points(n: int) -> torch.Tensor:
    """The first n points of the binarized-MNIST test split, [n, 784] float32."""
    return torch.from_numpy(test_split()[:n].astype(np.float32))
