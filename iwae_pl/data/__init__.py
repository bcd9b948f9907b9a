"""Data layer: binary image datasets for IWAE experiments.

``BinarizedDataModule`` serves ``(x [B, D] in {0, 1}, index int64 [B])`` batches; ``load_splits`` returns
the raw gray values; ``DATASETS`` describes the supported datasets; every user-facing failure is a one-line
``DataError`` (a ``ValueError``). This package never imports the model/math modules.
"""

from iwae_pl.data.datamodule import BinarizedDataModule
from iwae_pl.data.download import DataError
from iwae_pl.data.sources import DATASETS, load_splits

__all__ = ["BinarizedDataModule", "DataError", "DATASETS", "load_splits"]
