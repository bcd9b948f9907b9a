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
import warnings
from pathlib import Path
from typing import Callable, Sequence

import yaml
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

from .data import BinarizedDataModule
from .errors import ConfigError, DataError
from .lightning.budget import BudgetCheck
from .lightning.loggers import run_directory
from .lightning.module import IWAEModule
from .runs.result import RunResult

# name -> (function taking the remaining argv, one-line description); filled by the project's commands.
COMMANDS: dict[str, tuple[Callable[[list[str]], object], str]] = {}
from .runs import plot as _plot  # noqa: E402,F401  (registers `plot`; it needs COMMANDS defined above)

PROG = "iwae_pl"
# LightningCLI's optimizer:/lr_scheduler: blocks would silently replace the model's Adam and Burda schedule.
_OPTIMIZER_KEYS = ("optimizer", "lr_scheduler")


class RunConfig(SaveConfigCallback):
    """Saves the resolved config as ``<run_dir>/config.yaml`` (``run_directory``), so that every run,
    W&B ones included, keeps its own (Lightning's writes W&B runs' configs to the shared save_dir)."""

    def __init__(self, parser, config, **kwargs) -> None:
        super().__init__(parser, config, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer, pl_module, stage: str) -> None:  # rank 0 only (Lightning's contract)
        path = Path(run_directory(trainer)) / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(path), skip_none=False, overwrite=self.overwrite, multifile=self.multifile)


class IWAECLI(LightningCLI):
    """LightningCLI that records a ``RunResult`` of every subcommand it runs (``self.result``)."""

    def add_arguments_to_parser(self, parser) -> None:
        # The network's input size comes from the dataset, so configs never repeat it.
        parser.link_arguments("data.input_dim", "model.input_dim", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after `fit`, run `test` on the best checkpoint (or the last weights if none)")

    def parse_arguments(self, parser, args) -> None:
        # make_cli always passes the arguments on purpose; Lightning warns when sys.argv is not empty too.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().parse_arguments(parser, args)

    def before_fit(self) -> None:
        self.trainer.callbacks.append(BudgetCheck())

    def _record(self, subcommand: str) -> None:
        trainer = self.trainer
        if getattr(self, "result", None) is None:
            run_dir = trainer.strategy.broadcast(run_directory(trainer)) if trainer.logger is not None else None
            self.result = RunResult(run_dir=run_dir, subcommand=subcommand)
        self.result.update_metrics(trainer.callback_metrics)
        ckpt = trainer.checkpoint_callback
        if ckpt is not None:
            self.result.best_checkpoint = getattr(ckpt, "best_model_path", "") or ""
            self.result.last_checkpoint = getattr(ckpt, "last_model_path", "") or ""
            score = getattr(ckpt, "best_model_score", None)
            self.result.best_score = None if score is None else float(score)
        if trainer.is_global_zero:
            self.result.save()

    def _print_summary(self) -> None:
        if self.trainer.is_global_zero:
            print(self.result.format_summary(), flush=True)

    def after_fit(self) -> None:
        self._record("fit")
        if self.config[self.subcommand].get("test_after_fit"):
            best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
            self._record("fit")
        self._print_summary()

    def after_validate(self) -> None:
        self._record("validate")
        self._print_summary()

    def after_test(self) -> None:
        self._record("test")
        self._print_summary()

    def after_predict(self) -> None:
        self._record("predict")
        self._print_summary()


def _refuse_optimizer_settings(args: Sequence[str]) -> None:
    """ConfigError for ``--optimizer``/``--lr_scheduler`` flags or top-level keys in a ``--config`` file:
    the model builds its own Adam and schedule from ``model.lr``, ``model.adam_*`` and ``model.lr_schedule``."""
    args = list(args)
    flags = [a.split("=")[0] for a in args if a.startswith("--")]
    found = [f for f in flags if f[2:].split(".")[0] in _OPTIMIZER_KEYS]
    for flag, value in zip(args, args[1:]):
        path = Path(value)
        if flag in ("-c", "--config") and path.suffix in (".yaml", ".yml", ".json") and path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            found += [f"{k}: (in {value})" for k in _OPTIMIZER_KEYS if isinstance(data, dict) and k in data]
    if found:
        raise ConfigError(f"{found[0]} is not a setting here: the model builds Adam and its schedule itself; "
                          "use model.lr, model.adam_betas, model.adam_eps and model.lr_schedule (constant, burda)")


def make_cli(args: Sequence[str], **kwargs) -> IWAECLI:
    """Parse ``args`` (subcommand first), build model, data and trainer, run the subcommand.
    ``kwargs`` go to LightningCLI (e.g. ``run=False``: no subcommand, only parse and build)."""
    _refuse_optimizer_settings(args)
    epilog = "; ".join(f"{PROG} {name}: {description}" for name, (_, description) in sorted(COMMANDS.items()))
    parser_kwargs = {"prog": PROG, "epilog": f"Project commands ({PROG} <command> --help): {epilog}" if epilog else None}
    return IWAECLI(IWAEModule, BinarizedDataModule, args=list(args), parser_kwargs=parser_kwargs,
                   auto_configure_optimizers=False, save_config_callback=RunConfig,
                   # a second run in the same directory overwrites the saved config instead of failing
                   save_config_kwargs={"overwrite": True}, **kwargs)


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
from . import sweeps as _sweeps  # noqa: E402,F401  (registers the sweep and sweep-report subcommands)
