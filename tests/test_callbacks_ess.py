"""EffectiveSampleSize: exact values on hand-made log-weights, directly and through a Trainer; the
weight histogram to a PNG and to TensorBoard; the VAE still reports ESS."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from iwae_pl import ConfigError
from iwae_pl.callbacks import EffectiveSampleSize, ess_stats
from iwae_pl.diagnostics.ess import weight_histogram

from test_callbacks_common import digits, logged, make_trainer, tiny_module, single_thread  # noqa: F401

K = 4
MIX = torch.tensor([1.0, 1.0, 2.0, 0.0]).log()          # weights 1, 1, 2, 0: ESS = 4^2 / 6
EQUAL, DOMINANT = torch.zeros(K), torch.tensor([0.0, -800.0, -900.0, -1e4])


def test_ess_of_hand_made_weights():
    log_w = torch.stack([EQUAL, DOMINANT, MIX], -1)[None]      # [M=1, K, B=3]
    s = ess_stats(log_w)
    torch.testing.assert_close(s["group"], torch.tensor([4.0, 1.0, 16 / 6], dtype=torch.float64))
    torch.testing.assert_close(s["all"], s["group"])
    torch.testing.assert_close(s["above_threshold"], torch.tensor([4.0, 1.0, 3.0], dtype=torch.float64))
    # only ratios matter, at any magnitude (computed from log-weights, no overflow; float64 so that the
    # shifted log-weights are still exact)
    torch.testing.assert_close(ess_stats(log_w.double() - 5e4)["group"], s["group"])
    torch.testing.assert_close(ess_stats(log_w.double() + 5e4)["all"], s["all"])


def test_groups_and_all():
    # M = 2 groups of K = 2: group 1 weights (1, 1), group 2 weights (4, 0)
    log_w = torch.tensor([[1.0, 1.0], [4.0, 0.0]]).log()[..., None]     # [2, 2, 1]
    s = ess_stats(log_w, threshold=0.3)
    assert s["group"].item() == pytest.approx((2 + 1) / 2)
    assert s["all"].item() == pytest.approx(6 ** 2 / (1 + 1 + 16))
    assert s["above_threshold"].item() == pytest.approx((2 + 1) / 2)


def test_weight_histogram_counts():
    edges = torch.linspace(-10, 0, 11, dtype=torch.float64)   # bins of one decade
    log_w = torch.stack([EQUAL, DOMINANT], -1)[None]            # w~: 1/4 x4, then 1, ~0, ~0, ~0
    counts = weight_histogram(log_w, edges)
    assert counts.sum() == 8
    assert counts[9] == 5          # log10(1/4) = -0.6 (x4) and log10(1) = 0 (the last edge, included)
    assert counts[0] == 3          # weights far below 1e-10 land in the first bin


class FixedLogWeights(pl.LightningModule):
    """Training step returns hand-made log-weights: EQUAL for even indices, DOMINANT for odd ones."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        x, index = batch
        log_w = torch.where((index % 2 == 0)[None, None], EQUAL[None, :, None], DOMINANT[None, :, None])
        return {"loss": (self.p * 0).sum(), "log_w": log_w}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def loader(n, batch_size):
    data = [(torch.zeros(3), torch.tensor(i)) for i in range(n)]
    return DataLoader(data, batch_size=batch_size)


def test_epoch_means_through_a_trainer_weight_by_data_points(tmp_path):
    # 7 points in batches of 3, 3, 1: 4 even (ESS 4) and 3 odd (ESS 1) -> mean (16 + 3) / 7
    trainer = make_trainer(tmp_path, [EffectiveSampleSize(histogram_every_n_epochs=0)], max_epochs=2)
    trainer.fit(FixedLogWeights(), train_dataloaders=loader(7, 3))
    for name in ("ess/group", "ess/all", "ess/above_threshold"):
        assert logged(trainer, name) == pytest.approx([19 / 7, 19 / 7], rel=1e-6)
    assert not (tmp_path / "run" / "version_0" / "figures").exists()     # no histogram asked for


def test_histogram_png_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb")
    callback = EffectiveSampleSize(histogram_every_n_epochs=2)
    trainer = make_trainer(tmp_path, [callback], logger=logger, max_epochs=3)
    trainer.fit(FixedLogWeights(), train_dataloaders=loader(8, 4))
    figures = sorted(p.name for p in (tmp_path / "tb" / "version_0" / "figures").iterdir())
    assert figures == ["ess_curve.png", "ess_weights_epoch0001.png", "ess_weights_epoch0002.png"]
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"histograms": 0}).Reload()
    assert "ess/log10_weights" in events.Tags()["histograms"]
    hist = events.Histograms("ess/log10_weights")
    assert [h.step for h in hist] == [4, 6] and hist[0].histogram_value.num == 8 * K
    assert [h["epoch"] for h in callback.history] == [0, 1, 2]
    assert callback.state_dict()["history"][0]["ess/group"] == pytest.approx(2.5)   # (4 + 1) / 2


def test_vae_reports_ess(tmp_path):
    trainer = make_trainer(tmp_path, [EffectiveSampleSize(histogram_every_n_epochs=0)], limit_train_batches=5,
                           limit_val_batches=0)
    trainer.fit(tiny_module(objective="vae", K=10), datamodule=digits())
    (ess,) = logged(trainer, "ess/group")
    assert 1.0 <= ess <= 10.0 and logged(trainer, "ess/all") == [ess]


def test_bad_settings():
    with pytest.raises(ConfigError, match=r"ESS threshold must be a finite number in \(0.0, 1.0\], got 2"):
        EffectiveSampleSize(threshold=2)
    with pytest.raises(ConfigError, match="histogram_every_n_epochs must be an integer >= 0"):
        EffectiveSampleSize(histogram_every_n_epochs=-1)


class LossOnly(FixedLogWeights):
    def training_step(self, batch, batch_idx):
        return (self.p * 0).sum()


def test_needs_log_weights_from_the_training_step(tmp_path):
    trainer = make_trainer(tmp_path, [EffectiveSampleSize()])
    with pytest.raises(ConfigError, match="needs training_step to return"):
        trainer.fit(LossOnly(), train_dataloaders=loader(4, 2))
