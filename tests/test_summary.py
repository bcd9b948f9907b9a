"""A run ends with a table of its final metrics and its directory; a run that can never validate says so
at the start, in one line."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from iwae_pl.runs import RunResult, run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", str(ROOT / "sweeps" / "quickstart.yaml"), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--model.val_k", "10", "--model.test_k", "20"]


def _summary_values(out: str) -> dict[str, float]:
    """The metric rows of the printed summary (after the 'iwae_pl <cmd> finished' line)."""
    block = out[out.rindex("iwae_pl "):]
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^  (\S+/\S+)\s+(-?[\d.]+|nan|inf)$", block, re.M)}


def test_fit_then_validate_print_metrics_and_run_directory(tmp_path, capfd):
    logs = tmp_path / "logs"
    result = run([*TINY, "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1",
                  "--trainer.logger.init_args.save_dir", str(logs)])
    out, err = capfd.readouterr()
    assert "iwae_pl fit finished:" in out and "warning" not in err
    printed = _summary_values(out)
    saved = RunResult.load(result.run_dir).metrics
    assert {"train/bound", "val/nll", "test/nll"} <= set(printed)
    for name, value in printed.items():  # the table shows the recorded values
        assert value == pytest.approx(saved[name], abs=5e-5), name
    run_dir = Path(result.run_dir)
    assert f"run directory: {run_dir}" in out
    for line in (f"config.yaml  {run_dir / 'config.yaml'}", f"best ckpt    {result.best_checkpoint}",
                 f"last ckpt    {result.last_checkpoint}"):
        assert line in out, line
    assert (run_dir / "config.yaml").is_file() and Path(result.best_checkpoint).is_file()

    validated = run([*TINY, "--ckpt_path", result.last_checkpoint, "--trainer.logger.init_args.save_dir", str(logs)],
                    subcommand="validate")
    out, _ = capfd.readouterr()
    assert "iwae_pl validate finished:" in out and f"run directory: {validated.run_dir}" in out
    assert _summary_values(out)["val/nll"] == pytest.approx(validated.metrics["val/nll"], abs=5e-5)
    assert validated.run_dir != result.run_dir

    predicted = run([*TINY, "--ckpt_path", result.last_checkpoint, "--trainer.limit_predict_batches", "1",
                     "--trainer.logger.init_args.save_dir", str(logs)], subcommand="predict")
    out, _ = capfd.readouterr()
    assert "iwae_pl predict finished:" in out and f"run directory: {predicted.run_dir}" in out


def test_summary_without_metrics_or_logger_says_so():
    text = RunResult(run_dir=None, subcommand="test").format_summary()
    assert "iwae_pl test finished:" in text and "no metrics logged" in text and "no logger" in text


WARNING = "iwae_pl: warning: this run never validates"


@pytest.mark.parametrize("args,expect", [
    (["--trainer.max_epochs", "1"], "trains 1 epoch(s) and validates every 10"),           # the config's cadence
    (["--trainer.max_epochs", "50", "--trainer.max_steps", "3"], "trains 2 epoch(s)"),    # steps end it first
    (["--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1",
      "--trainer.limit_val_batches", "0"], "limit_val_batches=0"),
    (["--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1"], None),        # validates: quiet
])
def test_run_that_never_validates_warns_once_at_start(tmp_path, capfd, args, expect):
    run([*TINY, "--trainer.limit_train_batches", "2", "--test_after_fit", "false",
         "--trainer.logger.init_args.save_dir", str(tmp_path), *args])
    _, err = capfd.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("iwae_pl: warning")]
    if expect is None:
        assert warnings == []
        return
    assert len(warnings) == 1 and warnings[0].startswith(WARNING) and expect in warnings[0], warnings
    assert "no best checkpoint: val/nll is never logged" in warnings[0]
