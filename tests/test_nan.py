"""NaN stops the run with one line (exit 3) and never reaches last.ckpt; skip mode drops the step;
an evaluation metric that sees a non-finite point is NaN/inf and fails the command, never a mean over
the finite points."""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch

from iwae_pl.cli import main
from iwae_pl.lightning.module import IWAEModule
from iwae_pl.runs import RunResult
from iwae_pl.runs.checkpointing import first_nonfinite
from iwae_pl.runs.safety import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # faults.py, named by class path in the configs below
BASE = ["--config", str(ROOT / "sweeps" / "quickstart.yaml"), "--trainer.enable_progress_bar", "false",
        "--model.layers", "[{latent: 2, hidden: [8]}]", "--model.K", "3", "--model.val_k", "5",
        "--model.test_k", "20", "--data.batch_size", "100", "--test_after_fit", "false",
        "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1", "--last_checkpoint.every_n_steps", "5",
        "--trainer.check_val_every_n_epoch", "1"]  # (validating: no short-run warning on stderr)


def fit(tmp_path, monkeypatch, capsys, *extra):
    monkeypatch.chdir(tmp_path)
    code = 0
    try:
        main(["fit", *BASE, *extra])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip(), tmp_path / "logs" / "quickstart" / "version_0"


def test_nan_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    # The parameter turns NaN when step 10 starts, the moment the step-10 state would be written.
    code, err, run_dir = fit(tmp_path, monkeypatch, capsys, "--trainer.callbacks+=faults.Poison",
                             "--trainer.callbacks.step=10")
    assert code == 3, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "training stopped at step 10 (epoch 0, batch 10)" in lines[0]
    assert "the loss" in lines[0] and "objective iwae(M=1, K=3)" in lines[0]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert (f"last good checkpoint: {last.relative_to(tmp_path)}; the step-10 state was not finite and was "
            "not written") in lines[0]
    checkpoint = load_checkpoint(last)
    assert checkpoint["global_step"] == 5  # the step-10 state was NaN and was not written
    assert first_nonfinite(checkpoint) is None
    model = IWAEModule(**{k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")})
    model.load_state_dict(checkpoint["state_dict"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    summary = RunResult.load(run_dir)
    assert summary.stopped.startswith("training stopped at step 10")


def test_skip_mode_drops_the_bad_step_and_counts_it(tmp_path, monkeypatch, capsys):
    code, err, run_dir = fit(tmp_path, monkeypatch, capsys, "--trainer.callbacks+=faults.Poison",
                             "--trainer.callbacks.step=3", "--trainer.callbacks.what=grad",
                             "--non_finite.action", "skip")
    assert code == 0, err
    last = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert first_nonfinite(last) is None and last["global_step"] == 26
    with open(run_dir / "metrics.csv") as f:
        skipped = [float(r["nonfinite/skipped_steps"]) for r in csv.DictReader(f) if r.get("nonfinite/skipped_steps")]
    assert skipped == [1.0, 1.0]  # the running count, at the end of each epoch
    guard = next(v for k, v in last["callbacks"].items() if k.startswith("FiniteGuard"))
    assert guard == {"skipped": 1}


def test_skip_mode_stops_after_max_skips(tmp_path, monkeypatch, capsys):
    code, err, _ = fit(tmp_path, monkeypatch, capsys, "--trainer.callbacks+=faults.Poison",
                       "--trainer.callbacks.step=3", "--trainer.callbacks.what=grad",
                       "--non_finite.action", "skip", "--non_finite.max_skips", "0")
    assert code == 3 and err.count("\n") == 0
    assert "the gradient of net." in err and "after 0 skipped steps (max_skips 0)" in err


def test_eval_metric_with_a_nan_point_is_nan_not_the_finite_mean():
    model = IWAEModule(input_dim=4, layers=[{"latent": 2, "hidden": [3]}])
    model._update("test", "nll", torch.tensor([1.0, float("nan"), 3.0]))
    model._update("test", "nll", torch.tensor([2.0]))
    assert math.isnan(float(model.metrics["test_nll"].compute()))
    assert model.nonfinite_points("test") == {"test/nll": 1}
    model.on_test_epoch_start()
    assert model.nonfinite_points("test") == {}


def _nan_points(monkeypatch):
    exact = IWAEModule.log_likelihood

    def some_nan(self, x, index, k):
        return torch.where(index % 19 == 0, torch.tensor(float("nan")), exact(self, x, index, k))

    monkeypatch.setattr(IWAEModule, "log_likelihood", some_nan)


def test_non_finite_test_points_fail_the_command(tmp_path, monkeypatch, capsys):
    """16 of the 300 test points get a NaN L_k (the issue's case): test/nll is NaN, not the mean of the
    other 284, the summary keeps it, and the command exits 3 with one line giving the count."""
    code, err, run_dir = fit(tmp_path, monkeypatch, capsys, "--trainer.max_steps", "3")
    assert code == 0, err
    _nan_points(monkeypatch)
    with pytest.raises(SystemExit) as info:
        main(["test", *BASE, "--data.eval_batch_size", "100",
              "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")])
    out, err = capsys.readouterr()
    err = err.strip()
    assert info.value.code == 3 and err.count("\n") == 0, err
    assert "iwae_pl test finished (test: test/nll is not finite (16 points" in out  # the summary says why
    assert "test: test/nll is not finite (16 points gave a non-finite value)" in err and "bound" not in err, err
    summary = RunResult.load(tmp_path / "logs" / "quickstart" / "version_1")
    assert math.isnan(summary.metrics["test/nll"]) and math.isfinite(summary.metrics["test/bound"])
    assert "test/nll" in summary.stopped


def test_non_finite_validation_stops_fit_and_fails_validate(tmp_path, monkeypatch, capsys):
    _nan_points(monkeypatch)
    code, err, run_dir = fit(tmp_path, monkeypatch, capsys, "--trainer.num_sanity_val_steps", "0",
                             "--trainer.check_val_every_n_epoch", "1")
    assert code == 3 and err.count("\n") == 0, err
    assert "training stopped at validation at epoch 0, step 13: val/nll (11 points non-finite)" in err, err
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 10  # not the epoch's end
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["validate", *BASE, "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 3 and "val: val/nll is not finite (11 points gave a non-finite value)" in err, err
