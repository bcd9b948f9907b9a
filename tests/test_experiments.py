"""Experiment definitions expand into the intended runs; the runner runs, continues and skips them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from iwae_pl.cli import COMMANDS, main
from iwae_pl.errors import ConfigError
from iwae_pl.report.commands import parse_set
from iwae_pl.report.experiments import (execute, is_complete, load_experiment, run_config,
                                        run_dir)
from iwae_pl.runs.result import RunResult

ROOT = Path(__file__).resolve().parents[1]
DEFS = ROOT / "sweeps" / "experiments"


def expand(name: str, variant: str):
    return load_experiment(DEFS / f"{name}.yaml").expand(variant)


def table(runs):
    return {(r.objective, r.M, r.K, r.layers, r.dataset, r.config["seed_everything"]) for r in runs}


def test_burda_table1_full_is_the_published_grid():
    runs = expand("burda_table1", "full")
    assert len(runs) == 3 * 2 * 2 * 3 == len({r.name for r in runs})
    assert table(runs) == {(o, 1, k, d, ds, 0) for o in ("vae", "iwae") for k in (1, 5, 50) for d in (1, 2)
                           for ds in ("mnist", "binarized_mnist", "omniglot")}
    for r in runs:
        assert r.budget["max_epochs"] == 3280 and r.budget["test_k"] == 5000 and r.budget["batch_size"] == 20
        assert r.config["model"]["lr_schedule"] == "burda" and r.config["test_after_fit"] is True
        assert r.budget["limit_train_batches"] is None
    two = next(r for r in runs if r.layers == 2)
    assert [layer["latent"] for layer in two.config["model"]["layers"]] == [100, 50]


def test_burda_table1_short_is_one_layer_fixed_mnist_with_two_seeds_at_k50():
    runs = expand("burda_table1", "short")
    assert table(runs) == ({(o, 1, k, 1, "binarized_mnist", 0) for o in ("vae", "iwae") for k in (1, 5)}
                           | {(o, 1, 50, 1, "binarized_mnist", s) for o in ("vae", "iwae") for s in (0, 1)})
    for r in runs:
        assert r.budget == {"max_epochs": 15, "limit_train_batches": 100, "batch_size": 20, "test_k": 100,
                            "limit_test_batches": None}
        assert r.config["data"]["seed"] == r.config["seed_everything"]
    assert "iwae_k50_burda1_binarized_mnist_s1" in {r.name for r in runs}


def test_burda_table2_continues_each_model_with_the_other_objective():
    for variant, first, total in (("full", 3280, 6560), ("short", 15, 30)):
        runs = {r.name: r for r in expand("burda_table2", variant)}
        assert len(runs) == 4
        children = [r for r in runs.values() if r.parent]
        assert len(children) == 2
        for child in children:
            parent = runs[child.parent]
            assert {parent.objective, child.objective} == {"vae", "iwae"}
            assert parent.layers == child.layers == 2 and parent.K == child.K == 50
            assert parent.budget["max_epochs"] == first and child.budget["max_epochs"] == total


def test_report_depth_is_one_to_seven_layers_at_k50():
    full = expand("report_depth", "full")
    assert table(full) == {(o, 1, 50, d, "mnist", 0) for o in ("vae", "iwae") for d in range(1, 8)}
    assert sorted({r.budget["max_epochs"] for r in full}) == [1, 3] and len(full) == 28
    for r in full:
        latents = [layer["latent"] for layer in r.config["model"]["layers"]]
        assert latents == [50] + [100] * (r.layers - 1)
        assert all(layer["hidden"] == [100, 100] for layer in r.config["model"]["layers"])
    short = expand("report_depth", "short")
    assert table(short) == {(o, 1, 50, d, "binarized_mnist", 0) for o in ("vae", "iwae") for d in range(1, 8)}
    assert {r.budget["max_epochs"] for r in short} == {5} and {r.budget["limit_train_batches"] for r in short} == {50}


def test_rainforth_is_the_table_the_grid_and_dreg():
    full = expand("rainforth_mk64", "full")
    assert all(r.M * r.K == 64 and r.layers == 1 and r.extra_test_k == (64,) for r in full)
    keys = {(r.objective, r.M, r.K, r.config["model"]["estimator"]) for r in full}
    table_rows = {("iwae", 1, 64), ("miwae", 8, 8), ("piwae", 8, 8), ("ciwae", 1, 64), ("vae", 1, 64)}
    grid = {("miwae", m, 64 // m) for m in (2, 4, 16, 32)}
    assert keys == ({(*t, "reparam") for t in table_rows | grid}
                    | {(*t, "dreg") for t in grid | {("iwae", 1, 64), ("miwae", 8, 8), ("piwae", 8, 8)}})
    assert next(r for r in full if r.objective == "ciwae").config["model"]["beta"] == 0.5
    short = expand("rainforth_mk64", "short")
    assert {(r.objective, r.M, r.K) for r in short} == table_rows | grid
    assert {r.config["model"]["estimator"] for r in short} == {"reparam"}
    assert {r.dataset for r in short} == {"binarized_mnist"} and {r.budget["test_k"] for r in short} == {200}
    assert {r.budget["max_epochs"] for r in short} == {5}
    names = [c["class_path"] for c in short[0].config["trainer"]["callbacks"]]
    assert "iwae_pl.callbacks.GradientSNR" in names and "pytorch_lightning.callbacks.ModelCheckpoint" in names


def write_definition(tmp_path: Path, groups, variants=None, **top) -> Path:
    data = {"experiment": "t", "base": {"model": {"layers": [{"latent": 2, "hidden": [4]}]}, "data": {"dataset": "digits"}},
            "groups": groups, "variants": variants or {"v": {}}, **top}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("groups, variant, needle", [
    ([{"axes": {"objectiv": ["vae"]}}], "v", "unknown run attribute 'objectiv'"),
    ([{"axes": {"objective": ["vae", "iwae"]}, "name": "same"}], "v", "appears twice"),
    ([{"axes": {"objective": ["vae"]}}], "w", "no variant 'w'; allowed: v"),
    ([{"runs": [{"objective": "iwae"}], "from": "nobody"}], "v", "continues from 'nobody'"),
    ([{"axes": {"objective": ["vae"]}, "name": "{K}"}], "v", "uses 'K', which is not an axis"),
    ([{"axes": {"objective": "vae"}}], "v", "must be a non-empty list"),
    ([{"axes": {"arch": ["big"]}}], "v", "unknown arch 'big'"),
    ([{"fixed": {"objective": "vae"}}], "v", "needs `axes` or `runs`"),
])
def test_bad_definitions_are_named(tmp_path, groups, variant, needle):
    with pytest.raises(ConfigError, match=needle):
        load_experiment(write_definition(tmp_path, groups)).expand(variant)


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key\\(s\\) studdy"):
        load_experiment(write_definition(tmp_path, [{"runs": [{"objective": "vae"}]}], studdy="x"))


def test_run_config_gives_each_run_its_own_directory(tmp_path):
    (spec,) = load_experiment(write_definition(tmp_path, [{"runs": [{"objective": "vae", "K": 3}],
                                                           "name": "{objective}{K}"}])).expand("v")
    logger = run_config(spec, tmp_path / "out")["trainer"]["logger"]["init_args"]
    assert Path(logger["save_dir"]) / logger["name"] / logger["version"] == run_dir(spec, tmp_path / "out")
    assert run_dir(spec, tmp_path / "out") == tmp_path / "out" / "t_v" / "vae3"


def test_parse_set():
    assert parse_set(["data.data_dir=/d", "model.test_k=100", "trainer.limit_val_batches=0"]) == {
        "data": {"data_dir": "/d"}, "model": {"test_k": 100}, "trainer": {"limit_val_batches": 0}}
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        parse_set(["data.data_dir"])


def test_commands_are_registered_and_misuse_is_one_line(capsys):
    assert {"experiment", "report"} <= set(COMMANDS)
    with pytest.raises(SystemExit) as err:
        main(["experiment", str(DEFS / "burda_table1.yaml"), "--variant", "huge", "--dry-run"])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "iwae_pl: error: experiment 'burda_table1' has no variant 'huge'; allowed: full, short"]


def test_dry_run_lists_every_run(tmp_path, capsys):
    main(["experiment", str(DEFS / "burda_table2.yaml"), "--variant", "short", "--out", str(tmp_path), "--dry-run"])
    out = capsys.readouterr().out
    assert out.count("[plan]") == 4 and "burda_table2/short: 4 planned" in out
    manifest = json.loads((tmp_path / "burda_table2_short" / "experiment.json").read_text())
    assert [m["name"] for m in manifest["runs"]] == ["vae_k50_burda2_s0", "iwae_k50_burda2_s0",
                                                     "iwae_k50_burda2_s0_from_vae", "vae_k50_burda2_s0_from_iwae"]
    assert manifest["runs"][0]["layers"] == 2 and manifest["runs"][0]["dataset"] == "binarized_mnist"


@pytest.mark.slow
def test_runner_runs_continues_and_skips(tmp_path):
    """Two real runs on digits: a VAE, then an IWAE continued from its last checkpoint."""
    experiment = load_experiment(DEFS / "burda_table2.yaml")
    lines: list[str] = []
    status = execute(experiment, "tiny", tmp_path, threads=1, echo=lines.append)
    assert status == {"vae_tiny_s0": "done", "iwae_tiny_s0_from_vae": "done"}, lines
    parent, child = (tmp_path / "burda_table2_tiny" / n for n in ("vae_tiny_s0", "iwae_tiny_s0_from_vae"))
    assert is_complete(parent) and is_complete(child)
    hparams = {d: yaml.safe_load((d / "hparams.yaml").read_text()) for d in (parent, child)}
    assert hparams[parent]["objective"] == "vae" and hparams[child]["objective"] == "iwae"
    steps = {d: torch.load(RunResult.load(d).last_checkpoint, weights_only=True)["global_step"] for d in (parent, child)}
    assert steps[parent] == 5 and steps[child] == 10  # the child went on from the parent's step
    extra = child / "test_k7"  # the extra test pass ran with its own test_k, not the run's (10)
    assert is_complete(extra) and yaml.safe_load((extra / "hparams.yaml").read_text())["test_k"] == 7
    assert "test/nll" in RunResult.load(extra).metrics
    lines.clear()
    assert execute(experiment, "tiny", tmp_path, echo=lines.append) == {"vae_tiny_s0": "skipped",
                                                                        "iwae_tiny_s0_from_vae": "skipped"}
