"""The project's LightningCLI: IWAEModule and BinarizedDataModule from a config, every setting checked
before anything is built (``preflight``), ``--ckpt_path`` resolved (a file, ``last`` or an http(s) URL,
always loaded as data), and a ``RunResult`` of every subcommand written as ``summary.json``.

``make_cli`` builds it; ``iwae_pl.cli.main`` (the command line) and ``run`` (the run function) call it.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Sequence

from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from ..commands import COMMANDS
from ..data import BinarizedDataModule
from ..errors import ConfigError, DataError
from ..lightning.budget import BudgetCheck
from ..lightning.callbacks.finite import FiniteGuard, NonFiniteError
from ..lightning.loggers import run_directory
from ..lightning.module import IWAEModule
from . import preflight
from .checkpointing import LastCheckpoint, resolve_last, run_dir_of, run_root
from .result import RunResult
from .safety import local_checkpoint

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
    """LightningCLI that records a ``RunResult`` of every subcommand it runs (``self.result``), checks
    every setting before building anything, and resolves ``--ckpt_path`` (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        argv = kwargs.get("args")
        if isinstance(argv, (list, tuple)):  # once, before the parser (which re-parses on --ckpt_path)
            _refuse_optimizer_settings(argv, preflight.check_config_files(argv))
        self._held = preflight.HeldChatter()
        with self._held:  # released once the settings are valid (_run_subcommand, or here with run=False)
            super().__init__(*args, **kwargs)
            self._held.release()

    def add_arguments_to_parser(self, parser) -> None:
        # The network's input size comes from the dataset, so configs never repeat it.
        parser.link_arguments("data.input_dim", "model.input_dim", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after `fit`, run `test` on the best checkpoint (or the last weights if none)")
        # Always on (configurable): the atomic last checkpoint and the NaN/inf guard.
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(FiniteGuard, "non_finite")

    # --- settings, before anything is built -------------------------------------------------------
    def parse_arguments(self, parser, args) -> None:
        self._args = args  # _parse_ckpt_path parses them again under the checkpoint's settings
        try:
            # make_cli always passes the arguments on purpose; Lightning warns when sys.argv is not empty too.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
                super().parse_arguments(parser, args)
        except argparse.ArgumentError as e:
            sub = self._subcommand_parsers.get(args[0]) if args and hasattr(self, "_subcommand_parsers") else None
            known = list((sub or parser).get_defaults().keys())
            raise ConfigError(preflight.parser_error_line(str(e), known)) from None

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path``: ``last`` -> the latest run's last checkpoint (fit logs into that run), a URL ->
        a verified local copy; then the checkpoint's model settings become defaults under the config and
        the command line, its architecture must agree, and everything is loaded as data."""
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else None
        ckpt = cfg.get("ckpt_path") if cfg is not None else None
        if ckpt is None:
            return
        version = None
        if ckpt == "best":
            raise ConfigError("ckpt_path 'best' only exists inside the run that found it; give the checkpoint's "
                              "path, 'last' or an http(s) URL")
        if ckpt == "last":
            path, version = resolve_last(cfg.trainer.logger, cfg.trainer.get("default_root_dir"))
            if path is None:
                if sub != "fit":
                    raise ConfigError(f"ckpt_path 'last': no run with a last checkpoint under "
                                      f"{run_root(cfg.trainer.logger, cfg.trainer.get('default_root_dir'))[0]}")
                rank_zero_info("ckpt_path 'last': no run to continue yet, starting a new one")
                cfg.ckpt_path = None
                return
            ckpt = str(path)
        local, checkpoint = local_checkpoint(ckpt)
        parser = self._subcommand_parsers[sub]
        parser.set_defaults(preflight.checkpoint_defaults(checkpoint.get("hyper_parameters", {}), IWAEModule))
        self.parse_arguments(self.parser, self._args)  # again, now under the checkpoint's settings
        cfg = self.config[sub]
        cfg.ckpt_path = str(local)
        if version is not None and sub == "fit":  # continue in the same run directory
            cfg.trainer.logger.init_args.version = version
            root, _ = run_root(cfg.trainer.logger, cfg.trainer.get("default_root_dir"))
            rank_zero_info(f"continuing {run_dir_of(root, version)} from {local}")
        preflight.check_architecture(cfg.model, checkpoint.get("hyper_parameters", {}), ckpt)
        preflight.check_dataset(cfg.data, checkpoint, ckpt)

    def before_fit(self) -> None:
        self.trainer.callbacks.append(BudgetCheck())

    def before_instantiate_classes(self) -> None:
        preflight.check_run_settings(self.config[self.subcommand] if self.subcommand else self.config)

    def instantiate_trainer(self, **kwargs):
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, TypeError) as e:
            if isinstance(e, (ConfigError, DataError)):
                raise
            raise ConfigError(f"{preflight.hardware_settings(self.config[self.subcommand].trainer)}: "
                              + " ".join(str(e).split())) from None

    def _run_subcommand(self, subcommand: str) -> None:
        if self.datamodule is not None and hasattr(self.datamodule, "setup"):
            # Data files are read now, so a missing one is reported before Lightning creates the run directory.
            self.datamodule.setup(subcommand)
        self._held.release()
        if subcommand == "fit" and self.config[subcommand].get("ckpt_path"):
            for cb in self.trainer.callbacks:
                if isinstance(cb, LastCheckpoint):
                    cb.keep_metrics(self.trainer)  # resuming: metrics.csv is continued, not replaced
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, ()):
            self.config_init[subcommand]["weights_only"] = True  # checkpoints are data
        try:
            super()._run_subcommand(subcommand)
        except NonFiniteError as e:  # training (FiniteGuard) or an evaluation metric (_finish): recorded once
            self._record(subcommand, stopped=str(e))
            self._print_summary()
            raise

    def _record(self, subcommand: str, stopped: str = "") -> None:
        trainer = self.trainer
        if getattr(self, "result", None) is None:
            run_dir = trainer.strategy.broadcast(run_directory(trainer)) if trainer.logger is not None else None
            self.result = RunResult(run_dir=run_dir, subcommand=subcommand)
        self.result.update_metrics(trainer.callback_metrics)
        self.result.stopped = stopped or self.result.stopped
        ckpt = trainer.checkpoint_callback
        if ckpt is not None:
            self.result.best_checkpoint = getattr(ckpt, "best_model_path", "") or ""
            self.result.last_checkpoint = getattr(ckpt, "last_model_path", "") or ""
            score = getattr(ckpt, "best_model_score", None)
            self.result.best_score = None if score is None else float(score)
        last = next((cb.path for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
        if last is not None and last.is_file():
            self.result.last_checkpoint = str(last)
        if trainer.is_global_zero:
            self.result.save()

    def _print_summary(self) -> None:
        if self.trainer.is_global_zero:
            print(self.result.format_summary(), flush=True)

    def _finish(self, subcommand: str, stage: str | None = None) -> None:
        """Record the command's outcome in summary.json and print it; when a reported ``stage`` metric saw
        a non-finite point, fail the command instead (exit 3; ``_run_subcommand`` records and prints it)."""
        counts = self.model.nonfinite_points(stage) if stage and hasattr(self.model, "nonfinite_points") else {}
        if counts:
            what = ", ".join(f"{name} is not finite ({n} points gave a non-finite value)"
                             for name, n in sorted(counts.items()))
            raise NonFiniteError(f"{stage}: {what}; a mean is never taken over the finite points only")
        self._record(subcommand)
        self._print_summary()

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit"):
            self._finish("fit")
            return
        self._record("fit")  # the fit's outcome is on disk before the test pass starts
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, weights_only=True)
        self._finish("fit", "test")

    def after_validate(self) -> None:
        self._finish("validate", "val")

    def after_test(self) -> None:
        self._finish("test", "test")

    def after_predict(self) -> None:
        self._finish("predict")


def _refuse_optimizer_settings(args: Sequence[str], files: Sequence[tuple[str, dict]]) -> None:
    """ConfigError for ``--optimizer``/``--lr_scheduler`` flags or top-level keys in a ``--config`` file
    (``files``: ``preflight.check_config_files``): the model builds its own Adam and schedule from
    ``model.lr``, ``model.adam_*`` and ``model.lr_schedule``."""
    flags = [a.split("=")[0] for a in args if a.startswith("--")]
    found = [f for f in flags if f[2:].split(".")[0] in _OPTIMIZER_KEYS]
    found += [f"{k}: (in {name})" for name, data in files for k in _OPTIMIZER_KEYS if k in data]
    if found:
        raise ConfigError(f"{found[0]} is not a setting here: the model builds Adam and its schedule itself; "
                          "use model.lr, model.adam_betas, model.adam_eps and model.lr_schedule (constant, burda)")


def make_cli(args: Sequence[str], **kwargs) -> IWAECLI:
    """Parse ``args`` (subcommand first), build model, data and trainer, run the subcommand.
    ``kwargs`` go to LightningCLI (e.g. ``run=False``: no subcommand, only parse and build)."""
    epilog = "; ".join(f"{PROG} {name}: {description}" for name, (_, description) in sorted(COMMANDS.items()))
    no_exit = {"exit_on_error": False}  # parser errors become one line (main), not a usage dump
    parser_kwargs = {"prog": PROG, "epilog": f"Project commands ({PROG} <command> --help): {epilog}" if epilog else None,
                     **no_exit, **{sub: dict(no_exit) for sub in IWAECLI.subcommands()}}
    return IWAECLI(IWAEModule, BinarizedDataModule, args=list(args), parser_kwargs=parser_kwargs,
                   auto_configure_optimizers=False, save_config_callback=RunConfig,
                   # a second run in the same directory overwrites the saved config instead of failing
                   save_config_kwargs={"overwrite": True}, **kwargs)
