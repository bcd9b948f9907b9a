"""Command line: ``iwae_pl {fit,validate,test,predict} --config sweeps/<experiment>.yaml``
(also ``python -m iwae_pl ...``).

A LightningCLI over IWAEModule and BinarizedDataModule; every run goes through it (see
``iwae_pl.runs.run``) and leaves a ``summary.json`` in its run directory. Settings errors that only
show when the classes are built (a bad objective/M/K combination, a missing data file) end with one
line on stderr and exit code 2 (settings) or 1 (data), not a traceback. Further subcommands of the
project's own (sweeps, reports) register in ``COMMANDS``.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from pytorch_lightning.cli import LightningCLI

from .data import BinarizedDataModule
from .errors import ConfigError, DataError
from .lightning.module import IWAEModule
from .runs.result import RunResult

# name -> (function taking the remaining argv, one-line description); filled by the project's commands.
COMMANDS: dict[str, tuple[Callable[[list[str]], object], str]] = {}


class IWAECLI(LightningCLI):
    """LightningCLI that records a ``RunResult`` of every subcommand it runs (``self.result``)."""

    def add_arguments_to_parser(self, parser) -> None:
        # The network's input size comes from the dataset, so configs never repeat it.
        parser.link_arguments("data.input_dim", "model.input_dim", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after `fit`, run `test` on the best checkpoint (or the last weights if none)")

    def _record(self, subcommand: str) -> None:
        trainer = self.trainer
        if getattr(self, "result", None) is None:
            self.result = RunResult(run_dir=trainer.log_dir if trainer.logger is not None else None,
                                    subcommand=subcommand)
        self.result.update_metrics(trainer.callback_metrics)
        ckpt = trainer.checkpoint_callback
        if ckpt is not None:
            self.result.best_checkpoint = getattr(ckpt, "best_model_path", "") or ""
            self.result.last_checkpoint = getattr(ckpt, "last_model_path", "") or ""
            score = getattr(ckpt, "best_model_score", None)
            self.result.best_score = None if score is None else float(score)
        if trainer.is_global_zero:
            self.result.save()

    def after_fit(self) -> None:
        self._record("fit")
        if self.config[self.subcommand].get("test_after_fit"):
            best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
            self._record("fit")

    def after_validate(self) -> None:
        self._record("validate")

    def after_test(self) -> None:
        self._record("test")

    def after_predict(self) -> None:
        self._record("predict")


def make_cli(args: Sequence[str]) -> IWAECLI:
    """Parse ``args`` (subcommand first), build model, data and trainer, run the subcommand."""
    return IWAECLI(IWAEModule, BinarizedDataModule, args=list(args),
                   # a second run in the same directory overwrites the saved config instead of failing
                   save_config_kwargs={"overwrite": True})


def _user_error(err: BaseException) -> BaseException | None:
    """The ConfigError/DataError behind err, if any: jsonargparse wraps errors raised while it
    instantiates a class (a callback's bad setting) in its own ValueError."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (ConfigError, DataError)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in COMMANDS:
            COMMANDS[argv[0]][0](argv[1:])
        else:
            make_cli(argv)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
        err = _user_error(exc)
        if err is None:
            raise
        if isinstance(err, ConfigError):  # settings (including data settings): CLI misuse
            print(f"iwae_pl: error: {err}", file=sys.stderr)
            sys.exit(2)
        print(f"iwae_pl: data error: {err}", file=sys.stderr)
        sys.exit(1)
from .report import commands as _report_commands  # noqa: E402,F401 - registers experiment, report
