"""LightningDataModule serving binary images from in-memory tensors.

Every batch of every loader is a tuple ``(x, index)``: ``x`` float32 ``[B, D]`` with values exactly 0.0 / 1.0,
``index`` int64 ``[B]`` = each data point's position in its split (evaluation derives per-point noise
from it).

Binarization:
- ``binarized_mnist`` is already binary (Larochelle's fixed binarization) and is served as is.
- The other datasets hold gray values in [0, 1]. Training batches are *dynamically* binarized: a fresh
  Bernoulli draw every time a batch is served, from a ``torch.Generator`` seeded by ``(seed, global rank)``
  (and, inside DataLoader workers, the worker's seed), so runs are reproducible and DDP ranks differ.
  Validation and test sets are binarized *once* with a generator seeded from ``seed`` alone, so they are
  identical across runs, ranks and processes.

Batches are produced by :meth:`BinaryDataset.__getitems__` (one tensor gather and one Bernoulli draw per
batch, no per-item Python work) through a plain ``DataLoader`` with an identity ``collate_fn``, so
Lightning can still swap in its ``DistributedSampler`` for training. Under DDP the validation, test and
predict loaders shard with ``ShardSampler`` (every point exactly once over all processes, no padding), so
their statistics equal a one-process run; ``limit_val``/``limit_test``/``limit_predict`` evaluate the first
N points of a split (before sharding). Every seed comes from ``iwae_pl.rng`` (named streams).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info

from iwae_pl import rng
from iwae_pl.data.download import DataSettingError
from iwae_pl.data.sources import SPLITS, dataset_spec, load_splits
from iwae_pl.errors import check_int

__all__ = ["BinarizedDataModule", "BinaryDataset", "ResumableRandomSampler", "ShardSampler", "identity_collate"]

Batch = tuple[torch.Tensor, torch.Tensor]

_SPLIT_KEY = {"val": 1, "test": 2}  # key of a split's one-off binarization in the binarize_fixed stream
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class ShardSampler(DistributedSampler):
    """Evaluation sharding without padding: process ``rank`` of ``num_replicas`` takes indices
    rank, rank + num_replicas, ... in order, so every point is evaluated exactly once over all
    processes (Lightning's ``DistributedSampler`` pads with repeats to equal lengths). A subclass of
    ``DistributedSampler``, so Lightning keeps it instead of injecting its own."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def identity_collate(batch: Batch) -> Batch:
    """``__getitems__`` already returns the whole batch: nothing to collate."""
    return batch


class BinaryDataset(Dataset):
    """In-memory images ``data`` float32 ``[N, D]``, served as ``(x [B, D], index int64 [B])`` batches.

    With ``seed=None`` the data must already be 0/1 and is served as is. With a seed, ``data`` holds
    probabilities and every batch is a fresh Bernoulli draw from a generator seeded by ``seed`` (mixed with
    the worker's seed inside a DataLoader worker, whose copy of the dataset would otherwise repeat the
    parent's stream in every worker and every epoch).
    """

    def __init__(self, data: torch.Tensor, seed: int | None = None) -> None:
        if data.ndim != 2 or data.dtype != torch.float32:
            raise ValueError(f"data must be float32 [N, D], got {data.dtype} {tuple(data.shape)}")
        self.data = data
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._generator_key: int | None = None

    def __len__(self) -> int:
        return self.data.shape[0]

    def _rng(self) -> torch.Generator:
        info = get_worker_info()
        key = -1 if info is None else info.seed
        if self._generator is None or self._generator_key != key:
            seed = self.seed if info is None else rng.stream_seed(self.seed, "binarize_train", info.seed)
            self._generator = torch.Generator().manual_seed(seed)
            self._generator_key = key
        return self._generator

    def rng_state(self) -> torch.Tensor | None:
        """State of the main process's binarization generator (None before its first draw, or unseeded)."""
        return None if self._generator is None or self._generator_key != -1 else self._generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        """Continue the main process's binarization stream from ``state`` (from :meth:`rng_state`)."""
        self._generator = torch.Generator()
        self._generator.set_state(state)
        self._generator_key = -1

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.int64)
        x = self.data[index]
        if self.seed is not None:
            x = torch.bernoulli(x, generator=self._rng())
        return x, index

    def __getitem__(self, i: int) -> Batch:
        x, index = self.__getitems__([int(i)])
        return x[0], index[0]

    def first(self, n: int, seed: int) -> Batch:
        """The first ``n`` points, always the same ones: ``(x [n, D] 0/1, index [n])``.

        Gray values are binarized once with a private generator (stream ``binarize_first`` of ``seed``), so the training
        batches' random stream is not advanced (diagnostics take their fixed examples here).
        """
        n = min(int(n), len(self))
        x = self.data[:n]
        if self.seed is not None:
            x = torch.bernoulli(x, generator=rng.generator(seed, "binarize_first"))
        return x, torch.arange(n)


class ResumableRandomSampler(Sampler[int]):
    """A random permutation per epoch from ``generator`` (the draws of ``RandomSampler(generator=...)``)
    that can stop and resume mid-epoch: :meth:`state_dict` records the generator state the current
    permutation was drawn from and how many indices were handed out, and after :meth:`load_state_dict`
    the next ``__iter__`` redraws that permutation and continues after them.
    """

    def __init__(self, num_samples: int, generator: torch.Generator) -> None:
        self.num_samples = num_samples
        self.generator = generator
        self._epoch_state: torch.Tensor | None = None
        self._position = 0
        self._resume: tuple[torch.Tensor, int] | None = None

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        skip = 0
        if self._resume is not None:
            state, skip = self._resume
            self._resume = None
            self.generator.set_state(state)
        self._epoch_state = self.generator.get_state()
        order = torch.randperm(self.num_samples, generator=self.generator).tolist()
        self._position = skip
        for i in order[skip:]:
            self._position += 1  # counted before the hand-out: a checkpoint after this batch skips it
            yield i

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        state = {"generator": self.generator.get_state(), "position": self._position}
        if self._epoch_state is not None:
            state["epoch_state"] = self._epoch_state
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        position = int(state.get("position", 0))
        if 0 < position < self.num_samples and "epoch_state" in state:  # mid-epoch
            self._resume = (state["epoch_state"], position)


class BinarizedDataModule(pl.LightningDataModule):
    """Binary image datasets for (importance-weighted) autoencoders.

    Args:
        dataset: ``digits`` (bundled, offline), ``binarized_mnist`` (Larochelle's fixed binarization),
            ``mnist``, ``omniglot`` or ``fashion_mnist``.
        data_dir: Root of ``<data_dir>/<dataset>/<file>``; null means $IWAE_PL_DATA_DIR, else
            ~/.cache/iwae_pl.
        batch_size: Training batch size (20 in the papers).
        eval_batch_size: Batch size of the validation, test and predict loaders.
        seed: Seeds the dynamic binarization, the fixed val/test binarization and the shuffling.
        download: Download missing files (checksum-verified); false means local files only.
        num_workers: DataLoader worker processes (0 loads in the main process, usually fastest).
        limit_val: Evaluate only the first N points of the validation split; null means all. Applied
            before DDP sharding, so the same N points are evaluated on any number of processes.
        limit_test: The same for the test split (test).
        limit_predict: The same for the test split when predicting.
    """

    def __init__(
        self,
        dataset: str = "digits",
        data_dir: str | None = None,
        batch_size: int = 20,
        eval_batch_size: int = 500,
        seed: int = 0,
        download: bool = True,
        num_workers: int = 0,
        limit_val: int | None = None,
        limit_test: int | None = None,
        limit_predict: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = dataset_spec(dataset)
        self.batch_size = check_int("batch_size", batch_size, 1, DataSettingError)
        self.eval_batch_size = check_int("eval_batch_size", eval_batch_size, 1, DataSettingError)
        self.seed = check_int("seed", seed, 0, DataSettingError)
        self.num_workers = check_int("num_workers", num_workers, 0, DataSettingError)
        self.limits = {name: None if n is None else check_int(f"limit_{name}", n, 1, DataSettingError)
                       for name, n in (("val", limit_val), ("test", limit_test), ("predict", limit_predict))}
        if not isinstance(download, bool):
            raise DataSettingError(f"download must be True or False, got {download!r}")
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise DataSettingError(f"data_dir must be a path or None, got {data_dir!r}")
        self.dataset = dataset
        self.data_dir = data_dir
        self.download = download
        self.save_hyperparameters()
        self._gray: dict[str, torch.Tensor] = {}  # float32 [N, D] gray values, per loaded split
        self._datasets: dict[str, BinaryDataset] = {}
        self._sampler: ResumableRandomSampler | None = None  # the training loader's, once built
        self._pending_state: dict | None = None  # restored state waiting for the training loader

    @property
    def input_dim(self) -> int:
        """Pixels per image (64 for digits, 784 for the MNIST-likes); known without loading."""
        return self.spec.input_dim

    @property
    def image_shape(self) -> tuple[int, int]:
        """(rows, cols) of one image, for image grids."""
        return self.spec.image_shape

    # ------------------------------------------------------------------------------------------ loading

    def _load(self, splits: Sequence[str]) -> None:
        missing = [s for s in splits if s not in self._gray]
        if missing:
            arrays = load_splits(self.dataset, self.data_dir, self.download, missing)
            self._gray.update({s: torch.from_numpy(np.ascontiguousarray(arrays[s])) for s in missing})

    def _global_rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_rank) if trainer is not None else 0

    def _world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(getattr(trainer, "world_size", 1)) if trainer is not None else 1

    def setup(self, stage: str | None = None) -> None:
        """Load what ``stage`` needs: fit -> train+val, validate -> val, test/predict -> test, None -> all."""
        if stage is not None and stage not in _STAGE_SPLITS:
            raise DataSettingError(f"unknown stage {stage!r}; choose one of: {', '.join(_STAGE_SPLITS)} or None")
        self._prepare(SPLITS if stage is None else _STAGE_SPLITS[stage])

    def _prepare(self, splits: Sequence[str]) -> None:
        self._load(splits)
        for split in splits:
            self._build(split)
        self._apply_pending_state()

    def _build(self, split: str) -> None:
        gray = self._gray[split]
        if self.spec.prebinarized:
            self._datasets[split] = BinaryDataset(gray)
        elif split == "train":
            seed = rng.stream_seed(self.seed, "binarize_train", self._global_rank())
            if "train" not in self._datasets or self._datasets["train"].seed != seed:  # rank changed
                self._datasets["train"] = BinaryDataset(gray, seed=seed)
        elif split not in self._datasets:  # fixed once: independent of rank, run and process
            g = rng.generator(self.seed, "binarize_fixed", _SPLIT_KEY[split])
            self._datasets[split] = BinaryDataset(torch.bernoulli(gray, generator=g))

    def _dataset(self, split: str) -> BinaryDataset:
        if split not in self._datasets:  # used outside a Trainer, without setup(): set up lazily
            self._prepare((split,))
        return self._datasets[split]

    def train_mean(self) -> torch.Tensor:
        """Per-pixel mean of the training gray values (probabilities), float32 ``[D]``; loads train if
        needed (the model may ask before ``setup``), with val: one read of the file(s) they share."""
        self._load(_STAGE_SPLITS["fit"])
        return self._gray["train"].mean(dim=0, dtype=torch.float64).to(torch.float32)

    # ------------------------------------------------------------------------------------------ loaders

    def _limited(self, split: str, limit: str) -> Dataset:
        """The split's dataset, cut to its first ``limits[limit]`` points (the indices stay the split's)."""
        dataset = self._dataset(split)
        n = self.limits[limit]
        if n is None:
            return dataset
        if n > len(dataset):
            raise DataSettingError(f"limit_{limit}={n} exceeds the {len(dataset)} points of the {self.dataset} "
                                   f"{split} split; give at most {len(dataset)} or None (all)")
        return BinaryDataset(dataset.data[:n], dataset.seed)

    def split_dataset(self, split: str) -> Dataset:
        """The dataset the ``split`` loader (train, val, test) serves; callbacks take it without building
        a loader (a new train loader replaces the sampler whose position the checkpoints save)."""
        return self._dataset("train") if split == "train" else self._limited(split, split)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        # A seeded shuffle: the order does not depend on the global RNG.
        generator = sampler = None
        if shuffle:
            generator = rng.generator(self.seed, "shuffle")
            sampler = ResumableRandomSampler(len(dataset), generator)
        elif self._world_size() > 1:
            sampler = ShardSampler(dataset, self._world_size(), self._global_rank())
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=identity_collate,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            generator=generator,
        )

    # ------------------------------------------------------------------------------------------ resuming

    def state_dict(self) -> dict:
        """Where the training stream stands: the shuffle generator and position in the epoch, and the
        binarization generator (saved in every checkpoint by Lightning, restored by ``load_state_dict``).

        Exact with ``num_workers=0`` (the default): workers hold their own copies of the generators.
        """
        state: dict = {}
        if self._sampler is not None:
            state["shuffle"] = self._sampler.state_dict()
        train = self._datasets.get("train")
        if train is not None and (binarization := train.rng_state()) is not None:
            state["binarization"] = binarization
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending_state = dict(state_dict)
        self._apply_pending_state()

    def _apply_pending_state(self) -> None:
        state = self._pending_state
        if not state:
            return
        if "binarization" in state and "train" in self._datasets:
            self._datasets["train"].set_rng_state(state.pop("binarization"))
        if "shuffle" in state and self._sampler is not None:
            self._sampler.load_state_dict(state.pop("shuffle"))

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.split_dataset("train"), self.batch_size, shuffle=True)
        self._sampler = loader.sampler  # the one whose position state_dict saves
        self._apply_pending_state()
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split_dataset("val"), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split_dataset("test"), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test set, in order."""
        return self._loader(self._limited("test", "predict"), self.eval_batch_size, shuffle=False)
