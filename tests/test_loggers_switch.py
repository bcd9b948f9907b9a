"""The README's logger switches, flag for flag: CSV (the configs' default), TensorBoard and W&B (offline)
each run one tiny epoch; every run keeps its own config.yaml and summary.json in its run directory, and
W&B's files go to <save_dir>/wandb/."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iwae_pl.runs import run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", str(ROOT / "sweeps" / "quickstart.yaml"), "--trainer.max_epochs", "1",
        "--trainer.check_val_every_n_epoch", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", "--model.val_k", "5", "--test_after_fit", "false",
        "--trainer.enable_progress_bar", "false"]

# The README's copy-paste flags (section "Loggers"), with save_dir pointed at the test's directory.
TENSORBOARD = ["--trainer.logger", "pytorch_lightning.loggers.TensorBoardLogger",
               "--trainer.logger.save_dir", "{logs}", "--trainer.logger.name", "quickstart"]
CSV = ["--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
       "--trainer.logger.save_dir", "{logs}", "--trainer.logger.name", "quickstart"]
WANDB = ["--trainer.logger", "iwae_pl.loggers.WandbLogger", "--trainer.logger.project", "iwae_pl",
         "--trainer.logger.save_dir", "{logs}"]


def _flags(flags: list[str], logs: Path) -> list[str]:
    return [f.format(logs=logs) for f in flags]


@pytest.mark.parametrize("flags,marker", [(CSV, "metrics.csv"), (TENSORBOARD, "events.out.tfevents.*")],
                         ids=["csv", "tensorboard"])
def test_switching_to_csv_or_tensorboard(tmp_path, flags, marker):
    logs = tmp_path / "logs"
    result = run([*TINY, *_flags(flags, logs)])
    run_dir = Path(result.run_dir)
    assert run_dir == logs / "quickstart" / "version_0"
    assert list(run_dir.glob(marker)), sorted(p.name for p in run_dir.iterdir())
    assert (run_dir / "config.yaml").is_file() and (run_dir / "summary.json").is_file()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["trainer"]["logger"]["class_path"] == flags[1]


def test_wandb_runs_offline_into_logs_wandb_and_each_run_keeps_its_config(tmp_path):
    logs = tmp_path / "logs"
    code = ("import sys, json; from iwae_pl.runs import run\n"
            "a = run(sys.argv[1:] + ['--model.K', '3']); b = run(sys.argv[1:] + ['--model.K', '4'])\n"
            "open('run_dirs.json', 'w').write(json.dumps([a.run_dir, b.run_dir]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), PYTHONWARNINGS="ignore")  # no credentials: offline
    proc = subprocess.run([sys.executable, "-c", code, *TINY, *_flags(WANDB, logs)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = [tmp_path / d for d in json.loads((tmp_path / "run_dirs.json").read_text())]
    assert len(list((logs / "wandb").glob("offline-run-*"))) == 2            # W&B's own files
    assert not (logs / "config.yaml").exists() and not (logs / "summary.json").exists()
    ks = []
    for run_dir in run_dirs:  # <save_dir>/<project>/<run id>/, where the checkpoints go too
        assert run_dir.parent == logs / "iwae_pl" and (run_dir / "checkpoints" / "last.ckpt").is_file()
        ks.append(yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["K"])
        assert tmp_path / json.loads((run_dir / "summary.json").read_text())["run_dir"] == run_dir
    assert ks == [3, 4]
