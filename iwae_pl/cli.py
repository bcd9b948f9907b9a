"""Command line: ``iwae_pl {fit,validate,test,predict} --config sweeps/<experiment>.yaml``
(also ``python -m iwae_pl ...``).

A LightningCLI over IWAEModule and BinarizedDataModule (``iwae_pl.runs.lightning_cli``); every run
goes through it (see ``iwae_pl.runs.run``) and leaves a ``summary.json`` in its run directory. Every bad setting, whoever
finds it (the config parser, Lightning, the project's classes), ends before anything is written with
one line on stderr and exit code 2 (settings) or 1 (data and checkpoint files), not a traceback or a
usage dump (``iwae_pl.runs.preflight``); a non-finite loss, gradient or evaluation metric ends with one
line and exit code 3. ``--ckpt_path`` takes a file, ``last`` (continue the latest run in its own
directory, ``iwae_pl.runs.checkpointing``) or an http(s) URL, always loaded as data
(``iwae_pl.runs.safety``). Further subcommands of the project's own (sweeps, reports, plots) register in
``iwae_pl.commands.COMMANDS``.
"""
from __future__ import annotations

import sys
from typing import Sequence

from .commands import COMMANDS
from .errors import ConfigError, DataError
from .lightning.callbacks.finite import NonFiniteError
from .runs.lightning_cli import IWAECLI, make_cli  # noqa: F401  (the CLI's classes, importable from here)

# Importing these registers the project's subcommands in COMMANDS (their heavy parts load when one runs).
from . import sweeps as _sweeps  # noqa: F401,E402  (sweep, sweep-report)
from .report import commands as _report_commands  # noqa: F401,E402  (experiment, report)
from .runs import plot as _plot  # noqa: F401,E402  (plot)


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
    except NonFiniteError as exc:
        print(f"iwae_pl: error: {exc}", file=sys.stderr)
        sys.exit(3)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
        err = _user_error(exc)
        if err is None:
            raise
        if isinstance(err, ConfigError):  # settings (including data settings): CLI misuse
            print(f"iwae_pl: error: {err}", file=sys.stderr)
            sys.exit(2)
        print(f"iwae_pl: data error: {err}", file=sys.stderr)
        sys.exit(1)
