"""The run function: a run returns its final metrics and run directory and writes summary.json."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from iwae_pl.runs import RunResult, run
from iwae_pl.runs.result import read_curves, run_dirs

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


def test_run_dirs_leave_out_the_extra_test_passes_inside_a_run(tmp_path):
    """A run's ``test_k*`` folders (extra test passes, each with its summary.json) belong to the run:
    the report and sweep-report list each run once."""
    from iwae_pl.sweeps.table import runs_rows

    for d in ("a/version_0", "a/version_0/test_k100", "b/version_0", "c/test_k5"):  # c: not inside a run
        RunResult(str(tmp_path / d), metrics={"test/nll": 90.0}).save()
    (tmp_path / "a" / "version_0" / "metrics.csv").write_text("epoch,step,val/bound\n0,9,-95.5\n1,19,-93.25\n")
    expected = [tmp_path / "a" / "version_0", tmp_path / "b" / "version_0", tmp_path / "c" / "test_k5"]
    assert run_dirs(tmp_path) == expected
    assert [Path(r["run_dir"]) for r in runs_rows(tmp_path)] == expected
    assert runs_rows(tmp_path)[0]["best val/bound"] == -93.25


def test_read_curves_keeps_file_order_and_skips_blank_cells(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,step,val/bound,train/bound\n0,9,-95.5,\n0,9,,-97\n1,19,-93.25,\n"
                                          ",,-1,\n")  # the last row has no epoch
    assert read_curves(tmp_path) == {"val/bound": [(0, -95.5), (1, -93.25)], "train/bound": [(0, -97.0)]}
    assert read_curves(tmp_path / "nowhere") == {}
