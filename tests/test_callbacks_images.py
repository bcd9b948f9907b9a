"""SampleImages: grid layout (originals above reconstructions), files, TensorBoard images, determinism."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from pytorch_lightning.loggers import TensorBoardLogger

from iwae_pl import ConfigError
from iwae_pl.callbacks import SampleImages
from iwae_pl.diagnostics.images import interleave_rows, model_samples, reconstructions
from iwae_pl.lightning.callbacks.images import image_shape

from test_callbacks_common import digits, make_trainer, single_thread, tiny_module  # noqa: F401


def test_interleave_rows_puts_originals_above_reconstructions():
    originals = torch.arange(5.0)[:, None, None].expand(5, 2, 2)          # image i is filled with i
    recons = -originals
    tiles = interleave_rows(originals, recons, ncol=3)
    assert tiles.shape == (12, 2, 2)                                        # 2 pairs of rows of 3
    assert tiles[:, 0, 0].tolist() == [0, 1, 2, -0.0, -1, -2, 3, 4, 0.5, -3, -4, 0.5]


def test_samples_and_reconstructions_are_probabilities():
    net = tiny_module().net
    probs = model_samples(net, 10, torch.Generator().manual_seed(0))
    assert probs.shape == (10, 64) and (probs >= 0).all() and (probs <= 1).all()
    assert torch.equal(probs, model_samples(net, 10, torch.Generator().manual_seed(0)))
    x = (torch.rand(3, 64) < 0.5).float()
    r = reconstructions(net, x)
    torch.testing.assert_close(r, net.decode_probs(net.posterior_means(x, "mean")[0]))


def test_trainer_writes_pngs_and_tensorboard_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb")
    callback = SampleImages(every_n_epochs=2, num_samples=12, num_reconstructions=5, ncol=4)
    trainer = make_trainer(tmp_path, [callback], logger=logger, max_epochs=3, limit_train_batches=2,
                           limit_val_batches=0)
    dm = digits()
    trainer.fit(tiny_module(), datamodule=dm)
    figures = tmp_path / "tb" / "version_0" / "figures"
    assert sorted(p.name for p in figures.iterdir()) == [
        "reconstructions_epoch0001.png", "reconstructions_epoch0002.png",
        "samples_epoch0001.png", "samples_epoch0002.png"]
    # the PNGs are titled figures in the common style; the bare grids go to TensorBoard
    assert all(imread(figures / name).shape[1] >= 800 for name in ("reconstructions_epoch0002.png",
                                                                    "samples_epoch0002.png"))
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0}).Reload()
    assert {"images/samples", "images/reconstructions"} <= set(events.Tags()["images"])
    assert [e.step for e in events.Images("images/samples")] == [4, 6]

    def grid(tag):
        return imread(io.BytesIO(events.Images(tag)[-1].encoded_image_string), format="png")[..., 0]

    recon, samples = grid("images/reconstructions"), grid("images/samples")
    # 4 rows of 4 8x8 tiles with 1-pixel borders (2 pairs of rows), enlarged to >= 256 pixels
    assert recon.shape[0] / recon.shape[1] == pytest.approx(37 / 37) and recon.shape[0] >= 256
    assert samples.shape[0] / samples.shape[1] == pytest.approx(28 / 37)
    # the first original tile is the first validation digit, exactly (0/1 pixels)
    scale = recon.shape[0] // 37
    tile = recon[scale:scale * 9:scale, scale:scale * 9:scale]
    first = dm.val_dataloader().dataset.data[0].view(8, 8).numpy()
    np.testing.assert_allclose(tile, first, atol=1 / 255)


def test_image_shape_from_the_datamodule_else_square():
    from types import SimpleNamespace

    assert image_shape(SimpleNamespace(datamodule=digits()), 64) == (8, 8)
    assert image_shape(SimpleNamespace(datamodule=SimpleNamespace(image_shape=(4, 16))), 64) == (4, 16)
    assert image_shape(SimpleNamespace(datamodule=None), 784) == (28, 28)
    with pytest.raises(ConfigError, match="60 pixels are not a square image"):
        image_shape(SimpleNamespace(datamodule=None), 60)


def test_bad_settings():
    with pytest.raises(ConfigError, match="num_samples must be an integer >= 0, got -1"):
        SampleImages(num_samples=-1)
    with pytest.raises(ConfigError, match="every_n_epochs must be an integer >= 1, got 0"):
        SampleImages(every_n_epochs=0)
