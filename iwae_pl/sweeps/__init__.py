"""Sweeps over M×K splits and hyperparameters: Optuna studies (``python -m iwae_pl sweep``), W&B
sweep files (``sweeps/wandb_*.yaml``) and the result table and plots (``python -m iwae_pl sweep-report``).

Importing this package registers the two subcommands; Optuna, matplotlib and the rest load only
when a command runs.
"""
from ..commands import COMMANDS


def _sweep(argv: list[str]) -> object:
    from .optuna_driver import sweep_main

    return sweep_main(argv)


def _report(argv: list[str]) -> object:
    from .table import report_main

    return report_main(argv)


COMMANDS["sweep"] = (_sweep, "run or resume an Optuna study of runs (sweeps/optuna_mk.yaml)")
COMMANDS["sweep-report"] = (_report, "table (Markdown, CSV) and plots of a study or a folder of runs")
