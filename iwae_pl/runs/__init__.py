"""Runs: the run function and run directories that fit, sweeps, resume and the report share."""
from .result import SUMMARY, RunResult
from .run import SUBCOMMANDS, run

__all__ = ["SUBCOMMANDS", "SUMMARY", "RunResult", "run"]
