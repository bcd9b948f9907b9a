"""Helpers shared by the diagnostics callbacks: "is it due", fixed examples, sharding, reductions.

None of these touch the training data stream or the global RNG: fixed examples are read from the
dataset's tensors (a dynamically binarized split is binarized once with a private generator), never
drawn through the training DataLoader.
"""
from __future__ import annotations

from typing import Mapping

import pytorch_lightning as pl
from torch import Tensor
from torch.utils.data import default_collate

from ...data.datamodule import BinaryDataset
from ...errors import ConfigError
from ..metrics import Sums

SOURCES = ("train", "val", "test")


# --- scheduling -------------------------------------------------------------------------------------
def epoch_due(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    """True at the end of every ``every_n_epochs``-th training epoch and of the last one (max_epochs)."""
    if trainer.sanity_checking:
        return False
    done = trainer.current_epoch + 1
    last = trainer.max_epochs is not None and trainer.max_epochs > 0 and done >= trainer.max_epochs
    return done % every_n_epochs == 0 or last


# --- data -------------------------------------------------------------------------------------------
def _source_dataset(trainer: pl.Trainer, source: str):
    datamodule = getattr(trainer, "datamodule", None)
    if hasattr(datamodule, "split_dataset"):  # BinarizedDataModule: no new loader (it would reset the sampler)
        return datamodule.split_dataset(source)
    if datamodule is not None and hasattr(datamodule, f"{source}_dataloader"):
        return getattr(datamodule, f"{source}_dataloader")().dataset
    loaders = {"train": "train_dataloader", "val": "val_dataloaders", "test": "test_dataloaders"}
    loader = getattr(trainer, loaders[source], None)
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if loader is None:
        raise ConfigError(f"no {source} data to take diagnostics examples from; give the Trainer a "
                          f"datamodule with {source}_dataloader() or choose another source")
    return loader.dataset


def fixed_examples(trainer: pl.Trainer, source: str, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` examples of a split, always the same ones: x [n, D] float 0/1, index [n] int64.

    A dynamically binarized split (a ``BinaryDataset`` with a seed) is binarized here with a private
    generator seeded by ``seed``, so the training batches' random stream is not advanced.
    """
    dataset = _source_dataset(trainer, source)
    if isinstance(dataset, BinaryDataset):
        return dataset.first(n, seed)
    n = min(n, len(dataset))
    x, index = default_collate([dataset[i] for i in range(n)])
    return x.float(), index.long()


def shard(x: Tensor, index: Tensor, trainer: pl.Trainer) -> tuple[Tensor, Tensor]:
    """This process's share of a fixed set (every world_size-th row); the shares partition the set."""
    rank, world = trainer.global_rank, trainer.world_size
    return x[rank::world], index[rank::world]


def sums(pl_module: pl.LightningModule, values: Mapping[str, Tensor]) -> Sums:
    """A ``Sums`` metric on the module's device holding this process's ``values`` (name -> tensor);
    its ``compute()`` (a collective: every process calls it) gives the sums over all processes."""
    metric = Sums({name: v.shape for name, v in values.items()}).to(pl_module.device)
    metric.update(**values)
    return metric


def log_global(pl_module: pl.LightningModule, metrics: dict[str, float]) -> None:
    """Log epoch-level values that are already global (identical on every process). ``sync_dist``
    averages identical values, a no-op that keeps them usable as monitors on every rank."""
    for name, value in metrics.items():
        pl_module.log(name, float(value), on_step=False, on_epoch=True, sync_dist=True)
