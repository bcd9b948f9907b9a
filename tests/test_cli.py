"""The real entry point, in subprocesses: fit -> checkpoint + metrics -> test -> finite NLL; errors."""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--config", str(ROOT / "sweeps" / "quickstart.yaml"), "--trainer.enable_progress_bar", "false"]


def run(args, cwd, check=True):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "iwae_pl", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def read_metrics(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("fit")
    run(["fit", *QUICK, "--trainer.max_epochs", "4", "--trainer.check_val_every_n_epoch", "2",
         "--trainer.log_every_n_steps", "5", "--model.val_k", "20", "--model.test_k", "200"], cwd)
    return cwd


def test_fit_writes_checkpoint_and_metrics_and_improves(fitted):
    version = fitted / "logs" / "quickstart" / "version_0"
    assert (version / "checkpoints" / "last.ckpt").is_file()
    assert (version / "config.yaml").is_file()
    rows = read_metrics(version / "metrics.csv")
    train = [float(r["train/bound"]) for r in rows if r.get("train/bound")]
    val_nll = [float(r["val/nll"]) for r in rows if r.get("val/nll")]
    assert len(train) > 20 and len(val_nll) == 2
    first, last = sum(train[:5]) / 5, sum(train[-5:]) / 5
    assert last > first + 1.5, (first, last)          # the bound rises by nats within 4 epochs
    assert all(math.isfinite(v) and v > 0 for v in val_nll)
    # test_after_fit (set in the quickstart) evaluated the best checkpoint at the end of fit
    test_nll = [float(r["test/nll"]) for r in rows if r.get("test/nll")]
    assert len(test_nll) == 1 and 10 < test_nll[0] < 64 * math.log(2)


def test_test_on_checkpoint_reports_finite_nll(fitted):
    ckpt = fitted / "logs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    proc = run(["test", *QUICK, "--ckpt_path", str(ckpt), "--model.test_k", "200"], fitted)
    rows = read_metrics(fitted / "logs" / "quickstart" / "version_1" / "metrics.csv")
    nll = float(next(r["test/nll"] for r in rows if r.get("test/nll")))
    assert math.isfinite(nll) and 10 < nll < 64 * math.log(2), nll   # better than a uniform model
    assert "test/nll" in proc.stdout


def test_second_run_in_same_directory_and_print_config(fitted):
    proc = run(["fit", *QUICK, "--trainer.max_steps", "2", "--trainer.logger.init_args.version", "0"], fitted)
    assert proc.returncode == 0
    printed = run(["fit", *QUICK, "--print_config"], fitted).stdout
    assert "objective: iwae" in printed and "dataset: digits" in printed


@pytest.mark.parametrize("args,needle", [
    (["--model.objective", "iwae", "--model.M", "8"], "takes M=1, got M=8"),
    (["--model.K", "0"], "K must be an integer >= 1, got 0"),
    (["--model.objective", "iwea"], "iwea"),
    (["--data.dataset", "mnist_typo"], "mnist_typo"),
])
def test_cli_misuse_exits_2_with_one_line(tmp_path, args, needle):
    proc = run(["fit", *QUICK, *args], tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
