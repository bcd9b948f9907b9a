"""sweeps/diagnostics.yaml through the real CLI in a subprocess: figures, metric names, bad settings."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "sweeps" / "diagnostics.yaml"


def run(args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "iwae_pl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_diagnostics_config_runs_and_logs_everything(tmp_path):
    proc = run(["fit", "--config", str(CONFIG), "--trainer.max_epochs", "2",
                "--trainer.enable_progress_bar", "false", "--trainer.check_val_every_n_epoch", "1",
                "--model.val_k", "10", "--model.test_k", "10"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = tmp_path / "logs" / "diagnostics" / "version_0"
    figures = {p.name for p in (version / "figures").iterdir()}
    assert {"activity_epoch0001.png", "ess_weights_epoch0001.png", "ess_curve.png", "samples_epoch0001.png",
            "reconstructions_epoch0001.png", "activity_test.png"} <= figures, figures
    with open(version / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    seen = {k for r in rows for k, v in r.items() if v}
    expected = {"warmup/beta", "active/layer1", "active/total", "ess/group", "ess/all", "ess/above_threshold",
                "snr/encoder", "snr/decoder", "active/nll_pruned", "active/nll_all", "val/nll", "test/nll"}
    assert expected <= seen, expected - seen
    snr = [float(r["snr/encoder"]) for r in rows if r.get("snr/encoder")]
    assert len(snr) == 1 and snr[0] > 0          # every 5 epochs, and after the last (epoch 2)


@pytest.fixture(scope="module")
def bad_warmup_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bad")
    config = yaml.safe_load(CONFIG.read_text())
    warmup = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("BetaWarmup"))
    warmup["init_args"]["schedule"] = "exponential"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    return run(["fit", "--config", str(bad), "--trainer.max_epochs", "1"], tmp_path)


MESSAGE = "unknown warm-up schedule 'exponential'; allowed: linear, sigmoid, cosine, constant"


def test_bad_callback_setting_fails_with_its_message(bad_warmup_run):
    proc = bad_warmup_run
    assert proc.returncode != 0 and MESSAGE in proc.stderr


def test_bad_callback_setting_is_one_line_exit_2(bad_warmup_run):
    proc = bad_warmup_run
    assert proc.returncode == 2 and MESSAGE in proc.stderr and "Traceback" not in proc.stderr
