"""Every config in sweeps/ parses and builds its model; the fixed-binarization MNIST configs run offline
from a local copy (a 1-epoch run on the shared data when IWAE_PL_DATA_DIR points at it)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import yaml

from iwae_pl.cli import make_cli
from iwae_pl.runs import run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "sweeps").glob("*.yaml")  # run configs (not study or W&B sweep files)
                 if not {"search_space", "method"} & set(yaml.safe_load(p.read_text())))
OFFLINE = sorted((ROOT / "sweeps").glob("binarized_mnist_*.yaml"))
NPZ = "binarized_mnist/binarized_mnist_uint8.npz"


@pytest.fixture(scope="module")
def cli():
    """One parser for all configs (building it is the slow part); run=False parses and builds, no fit."""
    return make_cli(["--config", str(ROOT / "sweeps" / "quickstart.yaml")], run=False)


def test_there_are_offline_configs_for_the_burda_and_rainforth_settings():
    names = {p.stem for p in OFFLINE}
    assert {"binarized_mnist_iwae", "binarized_mnist_vae", "binarized_mnist_miwae", "binarized_mnist_piwae",
            "binarized_mnist_iwae_2layer", "binarized_mnist_vae_2layer"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_builds_its_model(cli, path):
    config = cli.parser.parse_args(["--config", str(path)])
    built = cli.parser.instantiate_classes(config)  # bad objective/M/K combinations raise here
    model, data = built.model, built.data
    # (model.hparams would show the fixture's config: Lightning's instantiator records the CLI's own)
    assert tuple(model.objective.sample_shape) == (config.model.M, config.model.K)
    assert list(model.net.latent_sizes) == [layer.latent for layer in config.model.layers]
    assert model.net.input_dim == data.input_dim
    if path in OFFLINE:
        assert data.dataset == "binarized_mnist" and data.download is False  # the local copy only
        assert config.trainer.check_val_every_n_epoch <= config.trainer.max_epochs


def test_offline_config_settings_match_the_papers(cli):
    two = cli.parser.parse_args(["--config", str(ROOT / "sweeps" / "binarized_mnist_iwae_2layer.yaml")])
    assert [layer.latent for layer in two.model.layers] == [100, 50] and two.model.K == 50
    piwae = cli.parser.parse_args(["--config", str(ROOT / "sweeps" / "binarized_mnist_piwae.yaml")])
    assert (piwae.model.objective, piwae.model.M, piwae.model.K) == ("piwae", 8, 8)
    for config in (two, piwae):
        assert config.model.lr_schedule == "burda" and config.data.batch_size == 20
        assert config.model.test_k == 5000 and config.trainer.max_epochs == 3280


def _data_dir() -> Path:
    root = os.environ.get("IWAE_PL_DATA_DIR")
    if not root or not (Path(root) / NPZ).is_file():
        pytest.skip(f"IWAE_PL_DATA_DIR not set or without {NPZ}: real binarized MNIST not available")
    return Path(root)


def test_offline_config_runs_one_epoch_on_the_local_copy(tmp_path):
    data_dir = _data_dir()
    result = run(["--config", str(ROOT / "sweeps" / "binarized_mnist_piwae.yaml"), "--data.data_dir", str(data_dir),
                  "--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1",
                  "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
                  "--trainer.limit_test_batches", "2", "--data.eval_batch_size", "10",
                  "--model.val_k", "5", "--model.test_k", "10", "--trainer.enable_progress_bar", "false",
                  "--trainer.logger.init_args.save_dir", str(tmp_path)])
    for name in ("val/nll", "test/nll", "test/bound"):
        assert math.isfinite(result.metrics[name]), name
    assert 0 < result.metrics["test/nll"] < 784 * math.log(2)  # better than a uniform model after the bias init
    assert Path(result.best_checkpoint).is_file() and (Path(result.run_dir) / "config.yaml").is_file()
