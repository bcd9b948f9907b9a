"""The run function: a run returns its final metrics and run directory and writes summary.json."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from iwae_pl.runs import RunResult, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> RunResult:
    out = tmp_path_factory.mktemp("run")
    return run(["--config", str(ROOT / "sweeps" / "quickstart.yaml"), "--trainer.max_epochs", "2",
                "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false",
                "--trainer.logger.init_args.save_dir", str(out / "logs"), "--model.val_k", "10",
                "--model.test_k", "50"])


def test_run_returns_metrics_and_directory(result):
    run_dir = Path(result.run_dir)
    assert run_dir.is_dir() and (run_dir / "config.yaml").is_file()
    for name in ("val/nll", "val/bound", "test/nll", "test/bound", "train/bound"):
        assert math.isfinite(result.metrics[name]), name
    assert result.metrics["test/nll"] > 0
    assert Path(result.best_checkpoint).is_file() and Path(result.last_checkpoint).is_file()
    assert result.best_score is not None and result.best_score <= result.metrics["val/nll"] + 1e-6  # monitor: min


def test_summary_on_disk_equals_the_returned_result(result):
    loaded = RunResult.load(result.run_dir)
    assert loaded == result
    data = json.loads((Path(result.run_dir) / "summary.json").read_text())
    assert data["metrics"]["test/nll"] == result.metrics["test/nll"]


def test_metrics_are_the_logged_values(result):
    with open(Path(result.run_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("test/nll")]
    assert float(rows[-1]["test/nll"]) == pytest.approx(result.metrics["test/nll"], rel=1e-6)


def test_unknown_subcommand_is_refused():
    with pytest.raises(ValueError, match="unknown subcommand 'train'"):
        run([], subcommand="train")


def test_non_finite_metrics_survive_the_round_trip(tmp_path):
    r = RunResult(run_dir=str(tmp_path), metrics={"a": float("nan"), "b": float("inf"), "c": 1.5})
    r.save()
    back = RunResult.load(tmp_path)
    assert math.isnan(back.metrics["a"]) and back.metrics["b"] == math.inf and back.metrics["c"] == 1.5
