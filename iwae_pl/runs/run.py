"""The run function: one ordinary training run from a config, returning its metrics and run directory.

``python -m iwae_pl fit ...``, every sweep trial, a resumed run and the report's runs all go through
``run``, so a trial *is* a normal run: its own directory with the resolved ``config.yaml``,
checkpoints, metrics and ``summary.json``, re-runnable alone with
``python -m iwae_pl fit --config <run_dir>/config.yaml``.
"""
from __future__ import annotations

from typing import Sequence

from .result import RunResult

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def run(args: Sequence[str] = (), subcommand: str = "fit") -> RunResult:
    """Run ``subcommand`` (fit, validate, test, predict) with command-line style ``args``.

    Example: ``run(["--config", "sweeps/quickstart.yaml", "--trainer.max_epochs", "2"])``.
    Bad settings raise ``ConfigError`` (data problems ``DataError``); the CLI turns them into one line.
    Returns the run's ``RunResult`` (also written to ``<run_dir>/summary.json`` by rank 0).
    """
    if subcommand not in SUBCOMMANDS:
        raise ValueError(f"unknown subcommand {subcommand!r}; allowed: {', '.join(SUBCOMMANDS)}")
    from .lightning_cli import make_cli  # late: importing iwae_pl.runs (the report does) needs no torch

    cli = make_cli([subcommand, *args])
    return cli.result
