"""Helpers shared by the callback tests (imported by the other test_callbacks_* files), and tests of the
callbacks' shared helpers: fixed examples, "is it due", sums across processes, image grids."""
from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from iwae_pl import ConfigError
from iwae_pl.errors import check_choice, check_float, check_int
from iwae_pl.lightning.callbacks._common import epoch_due, fixed_examples, shard
from iwae_pl.diagnostics.images import image_grid
from iwae_pl.data import BinarizedDataModule
from iwae_pl.lightning.module import IWAEModule


# --- helpers for the other files --------------------------------------------------------------------
@pytest.fixture(autouse=True)
def single_thread():
    """These tests run tiny networks: one intra-op thread is faster, and far faster on a busy 2-core
    machine (where spinning OpenMP threads cost 30x). Imported by every test_callbacks_* file."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_module(layers=({"latent": 4, "hidden": [16]},), **kw) -> IWAEModule:
    """A small model for the 8x8 digits (64 pixels). Layers as dicts (as from YAML): a checkpoint with
    LayerSpec objects in its hyperparameters is refused by torch.load(weights_only=True) on resume."""
    torch.manual_seed(kw.pop("seed", 0))
    kw = {"K": 5, "val_k": 10, "test_k": 10, "lr": 3e-3, **kw}
    return IWAEModule(input_dim=64, layers=list(layers), **kw)


def digits(**kw) -> BinarizedDataModule:
    return BinarizedDataModule("digits", **{"batch_size": 20, "eval_batch_size": 100, **kw})


def make_trainer(tmp_path: Path, callbacks=(), logger=None, **kw) -> pl.Trainer:
    defaults = dict(max_epochs=1, accelerator="cpu", devices=1, enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                    logger=CSVLogger(tmp_path, name="run") if logger is None else logger,
                    default_root_dir=tmp_path)
    return pl.Trainer(callbacks=list(callbacks), **{**defaults, **kw})


def read_metrics(trainer: pl.Trainer) -> list[dict[str, str]]:
    trainer.logger.save()
    with open(Path(trainer.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def logged(trainer: pl.Trainer, name: str) -> list[float]:
    """All values of metric ``name`` in the run's metrics.csv, in order."""
    return [float(r[name]) for r in read_metrics(trainer) if r.get(name)]


# --- tests of the shared helpers --------------------------------------------------------------------
def test_checks_raise_one_line_config_errors():
    assert check_int("n", 3) == 3 and check_float("t", 0.5, 0.0, 1.0) == 0.5
    assert check_choice("s", "a", ("a",)) == "a"
    for call, needle in [(lambda: check_int("n", 0), "n must be an integer >= 1, got 0"),
                         (lambda: check_int("n", True), "got True"),
                         (lambda: check_float("t", float("nan")), "got nan"),
                         (lambda: check_float("t", 0.0, 0.0, low_open=True), "(0.0, inf]"),
                         (lambda: check_choice("source", "tran", ("train", "val")),
                          "unknown source 'tran'; allowed: train, val")]:
        with pytest.raises(ConfigError) as err:
            call()
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_epoch_due_every_n_and_last():
    def due(epoch, n, max_epochs=10, sanity=False):
        trainer = SimpleNamespace(current_epoch=epoch, max_epochs=max_epochs, sanity_checking=sanity)
        return epoch_due(trainer, n)
    assert [e for e in range(10) if due(e, 3)] == [2, 5, 8, 9]   # every 3rd epoch, and the last one
    assert [e for e in range(10) if due(e, 1)] == list(range(10))
    assert not due(2, 3, sanity=True)
    assert [e for e in range(7) if due(e, 5, max_epochs=-1)] == [4]


def test_fixed_examples_are_fixed_and_leave_the_training_stream_alone():
    dm = digits()
    dm.setup("fit")
    trainer = SimpleNamespace(datamodule=dm, global_rank=0, world_size=1)
    train_loader = dm.train_dataloader()
    state = train_loader.dataset._rng().get_state()
    x1, i1 = fixed_examples(trainer, "train", 50, seed=3)
    x2, _ = fixed_examples(trainer, "train", 50, seed=3)
    x3, _ = fixed_examples(trainer, "train", 50, seed=4)
    # the dynamic binarization's generator was not advanced
    assert torch.equal(train_loader.dataset._rng().get_state(), state)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3) and torch.equal(i1, torch.arange(50))
    assert set(x1.unique().tolist()) <= {0.0, 1.0} and x1.shape == (50, 64)
    xv, iv = fixed_examples(trainer, "val", 1000, seed=0)                 # capped at the split's size
    assert xv.shape == (200, 64) and torch.equal(xv, dm.val_dataloader().dataset.data)
    # the shards of two processes partition the set
    parts = [shard(xv, iv, SimpleNamespace(global_rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(torch.cat([p[1] for p in parts]).tolist()) == list(range(200))


def test_image_grid_layout():
    images = torch.stack([torch.full((2, 3), v) for v in (0.0, 0.25, 1.0)])   # 3 images 2x3
    grid = image_grid(images, ncol=2, pad=1, min_side=1)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1)
    assert (grid[1:3, 1:4] == 0.0).all() and (grid[1:3, 5:8] == 0.25).all() and (grid[4:6, 1:4] == 1.0).all()
    assert (grid[0] == 0.5).all() and (grid[4:6, 5:8] == 0.5).all()            # padding and the empty tile
    big = image_grid(images, ncol=2, pad=1, min_side=70)
    assert big.shape == (70, 90) and (big[:10, :10] == 0.5).all()              # enlarged x10 by repetition
