"""BinarizedDataModule: contract, splits, binarization, loaders, and a short run under a real Trainer."""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from iwae_pl.data import DATASETS, BinarizedDataModule, DataError, load_splits
from iwae_pl.data import datamodule as dm_module
from iwae_pl.data import sources
from iwae_pl.data.datamodule import BinaryDataset, identity_collate
from iwae_pl.data.download import RemoteFile


# ------------------------------------------------------------------------------------------ helpers

def epoch(loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """All batches of one pass, checking the batch contract on the way; returns (x, index) concatenated."""
    xs, idxs = [], []
    for batch in loader:
        assert isinstance(batch, tuple) and len(batch) == 2
        x, index = batch
        assert x.dtype == torch.float32 and x.ndim == 2 and index.dtype == torch.int64 and index.ndim == 1
        assert x.shape[0] == index.shape[0] <= loader.batch_size
        xs.append(x)
        idxs.append(index)
    return torch.cat(xs), torch.cat(idxs)


def by_index(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows reordered so that row i belongs to data point i."""
    return x[torch.argsort(index)]


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    return load_splits("digits")


def fitted(**kwargs) -> BinarizedDataModule:
    dm = BinarizedDataModule(**kwargs)
    dm.setup("fit")
    return dm


# ------------------------------------------------------------------------------------------ constructor

@pytest.mark.parametrize("name", list(DATASETS))
def test_dimensions_known_without_loading(name, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded data in __init__")

    monkeypatch.setattr(dm_module, "load_splits", no_loading)
    dm = BinarizedDataModule(dataset=name, data_dir="/nonexistent", download=False)
    assert (dm.input_dim, dm.image_shape) == ((64, (8, 8)) if name == "digits" else (784, (28, 28)))


def test_defaults_match_the_contract():
    dm = BinarizedDataModule()
    assert (dm.hparams.dataset, dm.hparams.batch_size, dm.hparams.eval_batch_size) == ("digits", 20, 500)
    assert (dm.hparams.seed, dm.hparams.download, dm.hparams.num_workers, dm.hparams.data_dir) == (
        0, True, 0, None)


@pytest.mark.parametrize("kwargs, named", [
    ({"dataset": "cifar"}, "'cifar'"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"eval_batch_size": -1}, "eval_batch_size"),
    ({"seed": -1}, "seed"),
    ({"num_workers": -2}, "num_workers"),
    ({"download": "yes"}, "download"),
    ({"data_dir": 3}, "data_dir"),
])
def test_invalid_arguments_fail_in_init_with_one_line(kwargs, named):
    with pytest.raises(DataError) as e:
        BinarizedDataModule(**kwargs)
    assert isinstance(e.value, ValueError)
    msg = str(e.value)
    assert "\n" not in msg and named in msg and repr(next(iter(kwargs.values()))) in msg
    if "dataset" in kwargs:
        assert all(name in msg for name in DATASETS)


def test_missing_files_surface_as_data_error_from_setup(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "EXTRA_DIRS", {})
    dm = BinarizedDataModule(dataset="mnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError) as e:
        dm.setup("fit")
    assert "\n" not in str(e.value) and "train-images-idx3-ubyte.gz" in str(e.value)


# ------------------------------------------------------------------------------------------ digits

def test_digits_splits_batches_and_index_coverage(digits):
    dm = BinarizedDataModule(dataset="digits", batch_size=20, eval_batch_size=64)
    dm.setup("fit")
    dm.setup("test")
    loaders = {"train": dm.train_dataloader(), "val": dm.val_dataloader(), "test": dm.test_dataloader(),
               "predict": dm.predict_dataloader()}
    sizes = {"train": 1297, "val": 200, "test": 300, "predict": 300}
    for split, loader in loaders.items():
        x, index = epoch(loader)
        assert x.shape == (sizes[split], 64) and is_binary(x)
        assert torch.equal(torch.sort(index).values, torch.arange(sizes[split]))  # each point exactly once
        gray = torch.from_numpy(digits["test" if split == "predict" else split])[index]
        # index really is the position in the split: pixels of gray 0 / 1 come out as 0 / 1
        assert torch.equal(x[gray == 0], torch.zeros_like(x[gray == 0]))
        assert torch.equal(x[gray == 1], torch.ones_like(x[gray == 1]))
    assert not torch.equal(epoch(loaders["train"])[1], torch.arange(1297))  # shuffled
    assert torch.equal(epoch(loaders["val"])[1], torch.arange(200))  # evaluation in order


def test_train_mean_is_mean_of_training_gray_values(digits):
    dm = BinarizedDataModule()
    mean = dm.train_mean()  # lazily loads train: the model may ask before setup()
    assert mean.dtype == torch.float32 and mean.shape == (64,)
    torch.testing.assert_close(mean, torch.from_numpy(digits["train"].mean(axis=0)), rtol=0, atol=1e-6)


def test_loaders_follow_the_contract():
    dm = fitted()
    loader = dm.train_dataloader()
    assert loader.collate_fn is identity_collate and loader.batch_size == 20
    assert loader.pin_memory == torch.cuda.is_available()
    assert hasattr(loader.dataset, "__getitems__")
    assert dm.val_dataloader().batch_size == 500


def test_loaders_without_setup_set_up_lazily():
    x, index = epoch(BinarizedDataModule().test_dataloader())
    assert x.shape == (300, 64)


# ------------------------------------------------------------------------------------------ binarization

def test_dynamic_binarization_redraws_every_epoch_and_is_reproducible():
    first, second = fitted(seed=3), fitted(seed=3)
    a1, a2 = epoch(first.train_dataloader()), epoch(second.train_dataloader())
    assert torch.equal(a1[0], a2[0]) and torch.equal(a1[1], a2[1])  # same seed: same order, same draws
    loader = first.train_dataloader()
    e1, e2 = epoch(loader), epoch(loader)
    assert not torch.equal(by_index(*e1), by_index(*e2))  # fresh draws for the same data points
    other = epoch(fitted(seed=4).train_dataloader())
    assert not torch.equal(by_index(*a1), by_index(*other))


def test_fixed_evaluation_binarization_is_identical_across_instances_and_epochs():
    dm1, dm2, dm3 = (BinarizedDataModule(seed=s, eval_batch_size=b) for s, b in ((7, 50), (7, 33), (8, 50)))
    for dm in (dm1, dm2, dm3):
        dm.setup(None)
    for split in ("val", "test"):
        get = lambda dm: by_index(*epoch(getattr(dm, f"{split}_dataloader")()))  # noqa: E731
        v1 = get(dm1)
        assert is_binary(v1) and torch.equal(v1, get(dm1))  # binarized once
        assert torch.equal(v1, get(dm2))  # same seed, other instance and batch size
        assert not torch.equal(v1, get(dm3))  # other seed
    val, test = (by_index(*epoch(loader)) for loader in (dm1.val_dataloader(), dm1.test_dataloader()))
    assert not torch.equal(val, test[:200])


def test_ranks_get_different_training_draws_but_the_same_evaluation_data():
    dms = []
    for rank in (0, 1):
        dm = BinarizedDataModule(seed=0)
        dm.trainer = SimpleNamespace(global_rank=rank)  # what Lightning attaches under DDP
        dm.setup("fit")
        dms.append(dm)
    ds0, ds1 = (dm.train_dataloader().dataset for dm in dms)
    idx = list(range(100))
    assert not torch.equal(ds0.__getitems__(idx)[0], ds1.__getitems__(idx)[0])
    assert torch.equal(epoch(dms[0].val_dataloader())[0], epoch(dms[1].val_dataloader())[0])


def test_empirical_mean_of_dynamic_draws_approaches_gray_values(digits):
    gray = torch.from_numpy(digits["train"][:50])
    ds = BinaryDataset(gray, seed=0)
    draws = 4000
    x, index = ds.__getitems__(list(range(50)) * draws)
    assert is_binary(x) and torch.equal(index[:50], torch.arange(50))
    mean = x.view(draws, 50, 64).mean(dim=0)
    # std of a mean of 4000 Bernoulli draws <= 0.5 / sqrt(4000) = 0.008
    assert (mean - gray).abs().max() < 0.04
    assert torch.equal(mean[gray == 0], gray[gray == 0]) and torch.equal(mean[gray == 1], gray[gray == 1])


def test_single_item_access_matches_batch_form(digits):
    ds = BinaryDataset(torch.from_numpy(digits["val"]), seed=None)
    x, i = ds[5]
    assert x.shape == (64,) and i.dtype == torch.int64 and int(i) == 5
    with pytest.raises(ValueError):
        BinaryDataset(torch.zeros(3, 4, dtype=torch.float64))


def test_worker_processes_draw_independent_streams():
    ds = BinaryDataset(torch.full((40, 64), 0.5), seed=0)  # identical gray values everywhere
    ds.__getitems__([0])  # the parent's generator now exists, and forked workers inherit it
    loader = DataLoader(ds, batch_size=20, shuffle=False, collate_fn=identity_collate, num_workers=2,
                        persistent_workers=True, generator=torch.Generator().manual_seed(0))
    (x0, i0), (x1, i1) = list(loader)  # batch 0 from worker 0, batch 1 from worker 1
    assert torch.equal(torch.cat([i0, i1]), torch.arange(40)) and is_binary(x0)
    assert not torch.equal(x0, x1)  # copies of one generator would give equal draws here
    (y0, _), _ = list(loader)
    assert not torch.equal(x0, y0)  # and a worker's next epoch is a fresh draw


def test_distributed_sampler_can_be_injected():
    """What Lightning does under DDP: rebuild the loader around a DistributedSampler."""
    from pytorch_lightning.utilities.data import _update_dataloader

    loader = fitted().train_dataloader()
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        x, index = epoch(_update_dataloader(loader, sampler))
        assert x.shape[1] == 64 and is_binary(x)
        seen.append(index)
    covered = torch.cat(seen).unique()
    assert torch.equal(covered, torch.arange(1297))


# ------------------------------------------------------------------------------------------ other datasets

def write_mnist_like(root: Path, monkeypatch, n_train: int = 420, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "t10k": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)}
    table = {}
    for part, a in arrays.items():
        name = f"{part}-images-idx3-ubyte.gz"
        body = gzip.compress(bytes([0, 0, 8, 3]) + np.array(a.shape, ">u4").tobytes() + a.tobytes())
        (root / "mnist").mkdir(parents=True, exist_ok=True)
        (root / "mnist" / name).write_bytes(body)
        table[name] = RemoteFile(name, (), f"md5:{hashlib.md5(body).hexdigest()}")
    monkeypatch.setitem(sources.REMOTE_FILES, "mnist", table)
    return arrays


def test_mnist_datamodule_on_generated_files(tmp_path, monkeypatch):
    arrays = write_mnist_like(tmp_path, monkeypatch)
    dm = BinarizedDataModule(dataset="mnist", data_dir=str(tmp_path), download=False, eval_batch_size=128)
    dm.setup("fit")
    x, index = epoch(dm.train_dataloader())
    assert x.shape == (20, 784) and is_binary(x)
    val = by_index(*epoch(dm.val_dataloader()))
    assert val.shape == (400, 784)
    gray_val = torch.from_numpy(arrays["train"][20:].reshape(400, 784))
    assert torch.equal(val[gray_val == 0], torch.zeros_like(val[gray_val == 0]))  # val = the last 400
    assert torch.equal(val[gray_val == 255], torch.ones_like(val[gray_val == 255]))
    torch.testing.assert_close(dm.train_mean(), torch.from_numpy(
        arrays["train"][:20].reshape(20, 784).astype(np.float64).mean(0) / 255).float())


def test_mnist_test_stage_reads_only_t10k(tmp_path, monkeypatch):
    write_mnist_like(tmp_path, monkeypatch)
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    dm = BinarizedDataModule(dataset="mnist", data_dir=str(tmp_path), download=False)
    dm.setup("test")
    assert epoch(dm.test_dataloader())[0].shape == (10, 784)


def test_fixed_binarization_dataset_is_served_unchanged(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    sizes = {"train": 30, "valid": 7, "test": 9}
    arrays = {k: rng.integers(0, 2, (n, 784), dtype=np.uint8) for k, n in sizes.items()}
    d = tmp_path / "binarized_mnist"
    d.mkdir()
    np.savez(d / "binarized_mnist_uint8.npz", **arrays)
    digest = hashlib.sha256((d / "binarized_mnist_uint8.npz").read_bytes()).hexdigest()
    monkeypatch.setitem(sources.REMOTE_FILES, "binarized_mnist", {
        "binarized_mnist_uint8.npz": RemoteFile("binarized_mnist_uint8.npz", (), f"sha256:{digest}")})
    dm = BinarizedDataModule(dataset="binarized_mnist", data_dir=str(tmp_path), batch_size=8)
    dm.setup(None)
    loader = dm.train_dataloader()
    for _ in range(2):  # no resampling: every epoch serves exactly the stored pixels
        assert torch.equal(by_index(*epoch(loader)), torch.from_numpy(arrays["train"]).float())
    assert torch.equal(by_index(*epoch(dm.val_dataloader())), torch.from_numpy(arrays["valid"]).float())
    assert torch.equal(by_index(*epoch(dm.test_dataloader())), torch.from_numpy(arrays["test"]).float())


def test_real_mnist_t10k_through_the_datamodule():
    root = os.environ.get("IWAE_PL_DATA_DIR")
    if not root or not (Path(root) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("IWAE_PL_DATA_DIR not set or without mnist/t10k-images-idx3-ubyte.gz")
    dm = BinarizedDataModule(dataset="mnist", data_dir=str(root), download=False, eval_batch_size=2500)
    dm.setup("test")
    x, index = epoch(dm.predict_dataloader())
    assert x.shape == (10000, 784) and is_binary(x) and torch.equal(index, torch.arange(10000))


# ------------------------------------------------------------------------------------------ under a Trainer

class _Probe(pl.LightningModule):
    """Records what the Trainer hands to each step."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(input_dim, 1)
        self.seen: dict[str, list[tuple[tuple, torch.dtype, torch.dtype]]] = {}

    def _record(self, stage: str, batch) -> torch.Tensor:
        x, index = batch
        self.seen.setdefault(stage, []).append((tuple(x.shape), x.dtype, index.dtype))
        return self.layer(x).mean()

    def training_step(self, batch, batch_idx):
        return self._record("train", batch)

    def validation_step(self, batch, batch_idx):
        self._record("val", batch)

    def test_step(self, batch, batch_idx):
        self._record("test", batch)

    def predict_step(self, batch, batch_idx):
        return self._record("predict", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_runs_under_a_lightning_trainer():
    dm = BinarizedDataModule(dataset="digits", batch_size=16, eval_batch_size=100)
    model = _Probe(dm.input_dim)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=3,
                         limit_val_batches=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    trainer.predict(model, datamodule=dm)
    f32, i64 = torch.float32, torch.int64
    assert model.seen["train"] == [((16, 64), f32, i64)] * 3
    assert ((100, 64), f32, i64) in model.seen["val"]
    assert model.seen["test"] == [((100, 64), f32, i64)] * 3 == model.seen["predict"]


def test_train_mean_then_fit_setup_reads_the_files_once(monkeypatch):
    """The model asks for train_mean before setup('fit'): train and val (which share files) are read
    in one call, not once for train_mean and again for setup."""
    import iwae_pl.data.datamodule as datamodule_module

    calls = []
    real = datamodule_module.load_splits
    monkeypatch.setattr(datamodule_module, "load_splits", lambda *a: calls.append(tuple(a[-1])) or real(*a))
    dm = BinarizedDataModule(dataset="digits")
    dm.train_mean()
    dm.setup("fit")
    assert calls == [("train", "val")]


@pytest.mark.parametrize("source", ["train", "val", "test"])
def test_diagnostics_examples_leave_the_checkpointed_shuffle_alone(source):
    """A callback taking fixed examples mid-epoch must not build a new train loader: that replaced the
    sampler whose position checkpoints save, so a resumed run shuffled differently from the killed one."""
    from iwae_pl.lightning.callbacks._common import _source_dataset, fixed_examples

    dm = BinarizedDataModule(dataset="digits", batch_size=10, seed=3)
    dm.setup("fit")
    dm.setup("test")
    loader = dm.train_dataloader()
    batches = iter(loader)
    next(batches), next(batches)
    before = dm.state_dict()["shuffle"]
    trainer = SimpleNamespace(datamodule=dm)
    dataset = _source_dataset(trainer, source)
    fixed_examples(trainer, source, 4, seed=0)
    assert dm._sampler is loader.sampler
    after = dm.state_dict()["shuffle"]
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value) if isinstance(value, torch.Tensor) else after[key] == value, key
    expected = {"train": loader.dataset, "val": dm.val_dataloader().dataset, "test": dm.test_dataloader().dataset}
    assert len(dataset) == len(expected[source])
    assert torch.equal(dataset.first(4, 0)[0], expected[source].first(4, 0)[0])
