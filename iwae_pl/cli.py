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
from .module import IWAEModule


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


def main(args: list[str] | None = None) -> None:
    try:
        IWAECLI(IWAEModule, BinarizedDataModule, args=args,
                # a second run in the same directory overwrites the saved config instead of failing
                save_config_kwargs={"overwrite": True})
    except ConfigError as err:
        print(f"iwae_pl: error: {err}", file=sys.stderr)
        sys.exit(2)
    except DataError as err:
        print(f"iwae_pl: data error: {err}", file=sys.stderr)
        sys.exit(1)
