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
