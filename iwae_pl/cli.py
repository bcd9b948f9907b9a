"""Command line: ``python -m iwae_pl {fit,validate,test,predict} --config sweeps/<experiment>.yaml``.

A LightningCLI over IWAEModule and BinarizedDataModule. Settings errors that only show when the
classes are built (a bad objective/M/K combination, a missing data file) end with one line on stderr
and exit code 2 (settings) or 1 (data), not a traceback.
"""
from __future__ import annotations

import sys

from pytorch_lightning.cli import LightningCLI

from .data import BinarizedDataModule, DataError
from .errors import ConfigError
from .lightning.module import IWAEModule


class IWAECLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The network's input size comes from the dataset, so configs never repeat it.
        parser.link_arguments("data.input_dim", "model.input_dim", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after `fit`, run `test` on the best checkpoint (or the last weights if none)")

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit"):
            best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


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


def main(args: list[str] | None = None) -> None:
    try:
        IWAECLI(IWAEModule, BinarizedDataModule, args=args,
                # a second run in the same directory overwrites the saved config instead of failing
                save_config_kwargs={"overwrite": True})
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
        err = _user_error(exc)
        if err is None:
            raise
        if isinstance(err, ConfigError):  # settings (including data settings): CLI misuse
            print(f"iwae_pl: error: {err}", file=sys.stderr)
            sys.exit(2)
        print(f"iwae_pl: data error: {err}", file=sys.stderr)
        sys.exit(1)
