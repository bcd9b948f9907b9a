"""The documented launch: torchrun with 2 CPU processes runs the CLI's fit + test to completion, and the
run directory records the test metrics once (rank 0)."""
from __future__ import annotations

import json

import pytest

from test_ddp_eval import torchrun

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
