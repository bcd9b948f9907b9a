"""A run SIGKILLed mid-epoch and resumed with ``--ckpt_path last`` is the run it continues; checkpoint
settings never override the command line; ``last.ckpt`` is the latest state."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iwae_pl.cli import main
from iwae_pl.data import BinarizedDataModule
from iwae_pl.errors import ConfigError
from iwae_pl.lightning.module import IWAEModule
from iwae_pl.model.likelihood import log_likelihood
from iwae_pl.model.schedules import burda_lr_factor
from iwae_pl.runs import RunResult, run
from iwae_pl.runs.checkpointing import (
    atomic_save,
    count_rows,
    find_last_checkpoint,
    first_nonfinite,
    resolve_last,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = "[{latent: 2, hidden: [8]}]"
STEPS_PER_EPOCH = 13  # 1,297 digits at batch 100
KILL_AT = 22          # epoch 1, batch 9
BASE = ["--config", str(ROOT / "sweeps" / "quickstart.yaml"), "--trainer.enable_progress_bar", "false",
        "--model.layers", TINY, "--model.K", "3", "--model.val_k", "5", "--model.test_k", "5000",
        "--model.lr_schedule", "burda", "--data.batch_size", "100", "--data.eval_batch_size", "200",
        "--test_after_fit", "false", "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "2",
        "--trainer.log_every_n_steps", "1", "--trainer.logger.init_args.flush_logs_every_n_steps", "1",
        "--last_checkpoint.every_n_steps", "5",
        "--trainer.callbacks+=faults.KillAt", f"--trainer.callbacks.step={KILL_AT}"]


def fit(cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", str(ROOT))])}
    return subprocess.run([sys.executable, "-m", "iwae_pl", "fit", *BASE, *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The uninterrupted run (the kill is disarmed by a start step it never reaches)."""
    cwd = tmp_path_factory.mktemp("whole")
    proc = fit(cwd, "--trainer.callbacks.step=100000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "logs" / "quickstart" / "version_0"


# (kill step, last checkpoint then): mid-epoch 1 after the step-20 checkpoint, with rows 20 and 21 on
# disk; and one step after the end-of-epoch-0 checkpoint (its schedule step follows on resume)
KILLS = [(KILL_AT, 20), (STEPS_PER_EPOCH + 1, STEPS_PER_EPOCH)]


@pytest.fixture(scope="module", params=KILLS, ids=["mid_epoch", "after_epoch_end"])
def killed(request, tmp_path_factory) -> tuple[Path, dict]:
    """A run SIGKILLed at a training step and resumed with --ckpt_path last."""
    step, _ = request.param
    cwd = tmp_path_factory.mktemp("broken")
    proc = fit(cwd, f"--trainer.callbacks.step={step}")
    assert proc.returncode == -9, (proc.returncode, proc.stderr[-3000:])  # SIGKILL
    run_dir = cwd / "logs" / "quickstart" / "version_0"
    at_kill = {"last": torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"],
               "rows": len(rows(run_dir)), "expected_last": request.param[1], "step": step}
    resumed = fit(cwd, f"--trainer.callbacks.step={step}", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return run_dir, at_kill


@pytest.fixture
def runs(whole, killed):
    return whole, killed[0], killed[1]


@pytest.mark.slow
def test_killed_run_resumes_exactly(runs):
    whole, resumed, at_kill = runs
    assert at_kill["last"] == at_kill["expected_last"]   # the checkpoint the continuation starts from
    assert at_kill["rows"] == at_kill["step"]            # rows after that checkpoint were on disk when it died
    assert not (resumed.parent / "version_1").exists()  # same run directory
    a, b = weights(whole / "checkpoints" / "last.ckpt"), weights(resumed / "checkpoints" / "last.ckpt")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"killed at step {at_kill['step']}: max |param difference| = {diff:.3g}")
    assert diff <= 1e-6
    ra, rb = RunResult.load(whole), RunResult.load(resumed)
    for name in ("val/nll", "val/bound"):
        print(f"{name}: {ra.metrics[name]!r} vs {rb.metrics[name]!r}")
        assert rb.metrics[name] == pytest.approx(ra.metrics[name], abs=1e-5)
    opt_a, opt_b = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]
                    for d in (whole, resumed))
    assert opt_a["param_groups"][0]["lr"] == opt_b["param_groups"][0]["lr"]  # the schedule went on alike


@pytest.mark.slow
def test_metrics_csv_has_every_step_once(runs):
    whole, resumed, _ = runs
    ra, rb = rows(whole), rows(resumed)
    steps = [int(r["step"]) for r in rb if r.get("train/bound")]
    assert steps == list(range(3 * STEPS_PER_EPOCH))  # each step once, in order
    assert len(rb) == len(ra)
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys() and x["step"] == y["step"]
        for key in x:
            if x[key] and key not in ("step", "epoch"):
                assert float(y[key]) == pytest.approx(float(x[key]), abs=1e-5), (key, x, y)


@pytest.mark.slow
def test_last_checkpoint_is_the_latest_epoch_without_validation(whole):
    """Validation runs after epoch 1 only: last.ckpt must still hold epoch 2's end (Lightning's
    save_last rewrote it only when val/nll was saved)."""
    last = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 * STEPS_PER_EPOCH and last["epoch"] == 2
    best = whole.parents[2] / RunResult.load(whole).best_checkpoint  # relative to the run's working directory
    assert torch.load(best, weights_only=True)["global_step"] == 2 * STEPS_PER_EPOCH
    assert first_nonfinite(last) is None
    assert last["iwae_pl_resume"]["metrics_rows"] == count_rows(whole / "metrics.csv")


@pytest.mark.slow
def test_command_line_wins_over_the_checkpoint(whole, tmp_path, monkeypatch):
    """test_k given on the command line is the one used (checkpoint: 5000); lr given for a continued
    fit is the optimizer's (scaled by the schedule), and both are echoed in the saved config."""
    last = whole / "checkpoints" / "last.ckpt"
    monkeypatch.chdir(tmp_path)
    result = run(["--ckpt_path", str(last), "--model.test_k", "100", "--data.eval_batch_size", "300",
                  "--trainer.enable_progress_bar", "false",
                  "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
                  "--trainer.logger.save_dir", str(tmp_path / "t")], subcommand="test")
    config = (Path(result.run_dir) / "config.yaml").read_text()
    assert "test_k: 100\n" in config
    # test/nll is L_100 of the checkpoint's network (its architecture, not the default one) on the test set
    hp = torch.load(last, weights_only=True)["hyper_parameters"]
    model = IWAEModule(**{k: v for k, v in hp.items() if not k.startswith("_")})
    model.load_state_dict(weights(last))
    dm = BinarizedDataModule(dataset="digits")
    x, index = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        expected = -log_likelihood(model.net, x, index, 100, seed=hp["eval_seed"]).mean()
    assert result.metrics["test/nll"] == pytest.approx(float(expected), abs=1e-4)

    # a continued fit with another lr: the optimizer takes it, scaled like the schedule
    proc = fit(tmp_path, "--ckpt_path", str(last), "--model.lr", "1e-4", "--trainer.max_epochs", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    new_dir = tmp_path / "logs" / "quickstart" / "version_0"
    state = torch.load(new_dir / "checkpoints" / "last.ckpt", weights_only=True)
    lr = state["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-4 * burda_lr_factor(4), rel=1e-9)   # 4 epochs done: the lr of epoch 4
    assert state["hyper_parameters"]["lr"] == 1e-4 and "lr: 0.0001" in (new_dir / "config.yaml").read_text()


@pytest.mark.slow
def test_other_architecture_or_dataset_is_one_line(whole, tmp_path, monkeypatch, capsys):
    last = whole / "checkpoints" / "last.ckpt"
    monkeypatch.chdir(tmp_path)
    quick = ["--config", str(ROOT / "sweeps" / "quickstart.yaml")]   # layers: latent 8, hidden [64, 64]
    with pytest.raises(SystemExit) as info:
        main(["test", *quick, "--ckpt_path", str(last)])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.count("\n") == 0 and "model.layers differs from the checkpoint's" in err
    # a checkpoint of 784-pixel images on the 8x8 digits
    ckpt = torch.load(last, weights_only=True)
    ckpt["hyper_parameters"]["input_dim"] = 784
    ckpt["datamodule_hyper_parameters"]["dataset"] = "mnist"
    torch.save(ckpt, tmp_path / "mnist.ckpt")
    with pytest.raises(SystemExit) as info:
        main(["test", "--ckpt_path", str(tmp_path / "mnist.ckpt"), "--data.dataset", "digits"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.count("\n") == 0 and "784-pixel images (dataset 'mnist')" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.ckpt"]


def test_last_without_a_run_starts_a_new_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(["--config", str(ROOT / "sweeps" / "quickstart.yaml"), "--ckpt_path", "last",
                  "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
                  "--model.layers", TINY])
    assert Path(result.run_dir).name == "version_0"
    assert torch.load(result.last_checkpoint, weights_only=True)["global_step"] == 3
    assert json.loads((Path(result.run_dir) / "summary.json").read_text())["subcommand"] == "fit"


def test_last_finds_the_highest_version_with_a_checkpoint_or_the_named_one(tmp_path):
    root = tmp_path / "logs" / "x"
    for v, has in ((0, True), (2, True), (10, False), (3, False)):
        (root / f"version_{v}" / "checkpoints").mkdir(parents=True)
        if has:
            (root / f"version_{v}" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert find_last_checkpoint(root) == (root / "version_2" / "checkpoints" / "last.ckpt", 2)
    assert find_last_checkpoint(root, 0) == (root / "version_0" / "checkpoints" / "last.ckpt", 0)
    assert find_last_checkpoint(root, 3) == (None, 3)
    assert find_last_checkpoint(tmp_path / "none") == (None, None)
    csv_logger = {"class_path": "pytorch_lightning.loggers.CSVLogger",
                  "init_args": {"save_dir": str(tmp_path / "logs"), "name": "x"}}
    assert resolve_last(csv_logger, None) == (root / "version_2" / "checkpoints" / "last.ckpt", 2)
    with pytest.raises(ConfigError, match="ckpt_path 'last' finds runs of a CSVLogger or TensorBoardLogger"):
        resolve_last({"class_path": "iwae_pl.loggers.WandbLogger", "init_args": {}}, None)


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """A disk that fills up mid-write: the old last.ckpt stays whole and no temporary file is left."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    atomic_save({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)

    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
