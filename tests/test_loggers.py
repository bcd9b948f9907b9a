"""W&B is one config switch away and goes offline by itself when there are no credentials."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from iwae_pl.loggers import wandb_credentials_available

ROOT = Path(__file__).resolve().parents[1]


def test_credentials_detection(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not wandb_credentials_available()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_credentials_available()
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_credentials_available()


def test_wandb_config_runs_offline_without_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "iwae_pl", "fit", "--config", str(ROOT / "sweeps" / "wandb.yaml"),
         "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
