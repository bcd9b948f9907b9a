"""W&B sweep files: valid against W&B's sweep schema, and every command the agent would run for the
proposed runs parses with the project's CLI into the intended M, K and settings (nothing trains)."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest

from iwae_pl.cli import IWAECLI
from iwae_pl.data import BinarizedDataModule
from iwae_pl.lightning.module import IWAEModule
from iwae_pl.sweeps import wandb_sweeps
from iwae_pl.sweeps.spec import splits

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "sweeps").glob("wandb_*.yaml"))

with warnings.catch_warnings():  # sweeps 0.2 declares a pydantic-1 config key
    warnings.simplefilter("ignore")
    pytest.importorskip("sweeps", reason="the `sweeps` package (W&B's sweep engine) is in the test extra")


def parse(argv: list[str], tmp_path: Path) -> IWAECLI:
    """Build (not run) what the command would run: everything after ``-m iwae_pl fit``."""
    i = argv.index("iwae_pl")
    assert argv[:i] == ["/usr/bin/env", "python", "-m"] and argv[i + 1] == "fit"
    args = [str(ROOT / a) if a.startswith("sweeps/") else a for a in argv[i + 2:]]
    with mock.patch.object(sys, "argv", ["iwae_pl"]):  # pytest's own arguments are not the command's
        return IWAECLI(IWAEModule, BinarizedDataModule, run=False,
                       args=[*args, f"--trainer.logger.init_args.save_dir={tmp_path}"])


def test_there_are_both_sweep_files():
    assert {f.name for f in FILES} >= {"wandb_mk.yaml", "wandb_bayes.yaml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_sweep_file_validates_against_the_wandb_schema(path):
    config = wandb_sweeps.load(path)
    assert wandb_sweeps.violations(config) == []
    assert config["command"][:5] == ["${env}", "${interpreter}", "-m", "iwae_pl", "fit"]
    assert config["command"][-1] == "${args}"


def test_the_schema_check_can_fail():
    bad = wandb_sweeps.load(ROOT / "sweeps" / "wandb_mk.yaml")
    bad["method"] = "gridd"
    assert wandb_sweeps.violations(bad)
    bad = wandb_sweeps.load(ROOT / "sweeps" / "wandb_bayes.yaml")
    bad["parameters"]["model.lr"]["distribution"] = "log_uniform_valuez"
    assert wandb_sweeps.violations(bad)


def test_grid_expands_to_each_split_of_64_once_and_parses(tmp_path):
    config = wandb_sweeps.load(ROOT / "sweeps" / "wandb_mk.yaml")
    runs = wandb_sweeps.propose(config)
    assert len(runs) == 7
    seen = []
    for params in runs:
        cli = parse(wandb_sweeps.command(config, params), tmp_path)
        model = cli.config["model"]
        M, K = params["model"]["M"], params["model"]["K"]
        assert (model["M"], model["K"], model["objective"]) == (M, K, params["model"]["objective"])
        assert cli.model.objective.sample_shape == (M, K)  # the module built that split
        assert model["lr"] == 0.003 and model["layers"][0]["latent"] == 8  # the rest of the base model kept
        assert cli.config["trainer"]["max_epochs"] == 60
        assert type(cli.trainer.logger).__name__ == "WandbLogger"
        seen.append((M, K))
    assert sorted(seen) == splits(64)


def test_bayesian_proposals_parse_into_lr_objective_and_warmup(tmp_path):
    config = wandb_sweeps.load(ROOT / "sweeps" / "wandb_bayes.yaml")
    proposals = wandb_sweeps.propose(config, n=4)
    assert len(proposals) == 4
    lrs = set()
    for params in proposals:
        cli = parse(wandb_sweeps.command(config, params), tmp_path)
        model = cli.config["model"]
        assert model["lr"] == pytest.approx(params["model.lr"]) and 3e-4 <= model["lr"] <= 1e-2
        assert (model["M"], model["K"]) == (8, 8) and model["objective"] == params["model.objective"]
        assert cli.model.objective.sample_shape == (8, 8)
        warmups = [c for c in cli.trainer.callbacks if type(c).__name__ == "BetaWarmup"]
        assert len(warmups) == 1 and warmups[0].epochs == params["trainer.callbacks.epochs"]
        lrs.add(model["lr"])
    assert len(lrs) == 4  # four different proposals, not one repeated
