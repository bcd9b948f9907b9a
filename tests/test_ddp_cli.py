"""The documented launch: torchrun with 2 CPU processes runs the CLI's fit + test to completion, and the
run directory records the test metrics once (rank 0)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_ddp_eval import ROOT, ddp_env, torchrun

pytestmark = pytest.mark.slow


def test_torchrun_two_processes_fit_and_test(tmp_path):
    proc = torchrun("-m", "iwae_pl", "fit", "--config", "sweeps/quickstart.yaml",
                    "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
                    "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1",
                    "--trainer.limit_train_batches", "10", "--trainer.enable_progress_bar", "false",
                    "--trainer.logger.init_args.save_dir", str(tmp_path), "--model.val_k", "10",
                    "--model.test_k", "20", "--data.limit_val", "51", "--data.limit_test", "51")
    summaries = list(tmp_path.glob("quickstart/version_*/summary.json"))
    assert len(summaries) == 1, proc.stdout[-2000:]
    summary = json.loads(summaries[0].read_text())
    assert summary["subcommand"] == "fit"
    for name in ("test/nll", "test/bound", "val/nll", "train/bound"):
        assert name in summary["metrics"], summary["metrics"]
    assert 0 < summary["metrics"]["test/nll"] < 100
    assert summary["best_checkpoint"].endswith(".ckpt")


@pytest.mark.parametrize("subcommand", ["validate", "fit"])
def test_non_finite_points_on_both_ranks_are_counted_once_over_all_and_stop_every_rank(tmp_path, subcommand):
    """Points 0 and 2 fall to rank 0, point 1 to rank 1: every rank reports the total (3) and stops at
    the same validation with exit code 3, instead of one rank stopping alone while the other trains on.

    Lightning's own launcher (rank 1 a child of rank 0), not torchrun: torchrun terminates the other
    rank as soon as one exits, which can cut its line; here the pipe stays open until both have ended."""
    cmd = [sys.executable, "-m", "iwae_pl", subcommand, "--config", "sweeps/quickstart.yaml",
           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
           "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1", "--trainer.num_sanity_val_steps", "0",
           "--trainer.limit_train_batches", "3", "--trainer.enable_progress_bar", "false",
           "--trainer.logger.init_args.save_dir", str(tmp_path), "--model.val_k", "5", "--model.test_k", "5",
           "--data.limit_val", "50", "--trainer.callbacks+=faults.NaNPoints", "--trainer.callbacks.indices=[0, 1, 2]"]
    proc = subprocess.run(cmd, cwd=ROOT, env=ddp_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-4000:]
    if subcommand == "validate":
        line = "val: val/nll is not finite (3 points gave a non-finite value)"
    else:
        line = "training stopped at validation at epoch 0, step 3: val/nll (3 points non-finite)"
    assert proc.stderr.count(line) == 2, proc.stderr[-4000:]  # each rank, the same total
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
