"""Statistics over data are gathered across processes: A_u and the ESS epoch means of a 2-process
CPU DDP run (gloo, ddp_spawn) equal those of one process over the same examples."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader

from iwae_pl.callbacks import ActivityStats, EffectiveSampleSize, GradientSNR, ess_stats
from iwae_pl.data.datamodule import BinarizedDataModule, BinaryDataset, identity_collate
from iwae_pl.lightning.module import IWAEModule

from test_callbacks_common import make_trainer, single_thread  # noqa: F401

N_TRAIN, N_VAL, BATCH = 40, 60, 5


class DeterministicIWAE(IWAEModule):
    """Log-weights from the per-index evaluation noise (not the training RNG, which differs between one
    and two processes) and lr = 0, so both runs see the same weights for the same data points."""

    def training_step(self, batch, batch_idx):
        x, index = batch
        log_w = self.eval_log_weights(x, index).value
        return {"loss": -self.objective.bound(log_w).mean(), "log_w": log_w.detach()}


class FixedData(pl.LightningDataModule):
    """Fixed binary digits (the val split of digits): train = the first 40, val = all 60 of the rest."""

    def __init__(self):
        super().__init__()
        digits = BinarizedDataModule("digits")
        self.data = digits.val_dataloader().dataset.data[:N_TRAIN + N_VAL]

    def train_dataloader(self):
        return DataLoader(BinaryDataset(self.data[:N_TRAIN]), batch_size=BATCH, collate_fn=identity_collate)

    def val_dataloader(self):
        return DataLoader(BinaryDataset(self.data[N_TRAIN:]), batch_size=20, collate_fn=identity_collate)


class Dump(Callback):
    """Writes what the diagnostics computed (rank 0) to a file: spawned processes share no objects."""

    def __init__(self, path):
        self.path = path

    def on_fit_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            activity = next(c for c in trainer.callbacks if isinstance(c, ActivityStats)).activity
            torch.save({"activity": [a.cpu() for a in activity], "world": trainer.world_size,
                        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}, self.path)


def fit(tmp_path, devices):
    torch.manual_seed(0)
    layers = [{"latent": 5, "hidden": [16]}, {"latent": 3, "hidden": [8]}]
    module = DeterministicIWAE(input_dim=64, layers=layers, K=6, val_k=0, init_visible_bias=False)
    module.hparams.lr = 0.0  # Adam at lr 0 (the constructor takes lr > 0 only)
    callbacks = [ActivityStats(num_examples=51, source="val", propagate="sample", batch_size=7),
                 EffectiveSampleSize(histogram_every_n_epochs=1), GradientSNR(num_estimates=3, batch_size=4),
                 Dump(tmp_path / f"dump{devices}.pt")]
    strategy = dict(strategy="ddp_spawn") if devices > 1 else {}
    trainer = make_trainer(tmp_path / str(devices), callbacks, devices=devices, limit_val_batches=0,
                           **strategy)
    trainer.fit(module, datamodule=FixedData())
    return torch.load(tmp_path / f"dump{devices}.pt"), module


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, monkeypatch):
    # ddp_spawn sets MASTER_ADDR/PORT in this process; recorded here so that they are undone after the
    # test (later subprocesses would inherit a stale port)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    one, module = fit(tmp_path, 1)
    two, _ = fit(tmp_path, 2)
    assert (one["world"], two["world"]) == (1, 2)
    for a1, a2 in zip(one["activity"], two["activity"]):
        torch.testing.assert_close(a2, a1, rtol=1e-5, atol=1e-9)
    for name in ("ess/group", "ess/all", "ess/above_threshold", "active/total", "snr/encoder", "snr/decoder"):
        assert two["metrics"][name] == pytest.approx(one["metrics"][name], rel=1e-5), name
    # not vacuous: each process alone (even / odd indices under DistributedSampler) sees other ESS values
    x = FixedData().data[:N_TRAIN]
    with torch.no_grad():
        per_point = ess_stats(module.eval_log_weights(x, torch.arange(N_TRAIN)).value)["group"]
    assert per_point.mean().item() == pytest.approx(one["metrics"]["ess/group"], rel=1e-5)
    for rank in (0, 1):
        assert abs(per_point[rank::2].mean() - per_point.mean()) > 1e-3
