"""The ``experiment`` and ``report`` subcommands (registered in ``iwae_pl.commands.COMMANDS``)::

    python -m iwae_pl experiment sweeps/experiments/burda_table1.yaml --variant short --out runs/
    python -m iwae_pl report runs/ --out report/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..commands import COMMANDS
from ..errors import ConfigError, DataError


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line, exit code 2 through the CLI) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}")


def parse_set(items: list[str]) -> dict:
    """``["data.data_dir=/d", "model.test_k=100"]`` -> ``{"data": {"data_dir": "/d"}, "model": {"test_k": 100}}``
    (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set takes KEY.PATH=VALUE (e.g. data.data_dir=/data), got {item!r}")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with an earlier --set of {part!r}")
        node[leaf] = yaml.safe_load(value)
    return out


def _parse(prog: str, description: str, arguments: list[tuple[tuple[str, ...], dict]], argv: list[str]):
    parser = _Parser(prog=prog, description=description)
    for names, options in arguments:
        parser.add_argument(*names, **options)
    return parser.parse_args(argv)


EXPERIMENT_ARGS = [
    (("definition",), dict(help="experiment YAML, e.g. sweeps/experiments/burda_table1.yaml")),
    (("--variant",), dict(default="short", help="budget variant defined in the file (default: short)")),
    (("--out",), dict(default="runs", help="root of the run directories (default: runs)")),
    (("--only",), dict(nargs="*", default=[], help="run only these run names")),
    (("--set",), dict(dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="config merged into every run, e.g. --set data.data_dir=/data (repeatable)")),
    (("--threads",), dict(type=int, default=None,
                          help="OMP_NUM_THREADS of each run (1 on a shared CPU avoids oversubscription)")),
    (("--dry-run",), dict(action="store_true", help="list the runs and their commands, run nothing")),
]
REPORT_ARGS = [
    (("runs",), dict(help="folder holding run directories (searched recursively)")),
    (("--out",), dict(default="report", help="output folder of the page and its figures (default: report)")),
    (("--title",), dict(default="Reproduction results", help="page title")),
    (("--page",), dict(default="report.md", help="file name of the page in --out (default: report.md)")),
    (("--notes",), dict(default=None, help="Markdown file put on the page after the title (commands, budget)")),
]


def experiment_main(argv: list[str]) -> None:
    from .experiments import execute, load_experiment

    args = _parse("iwae_pl experiment", "Run the runs of an experiment definition (each a `fit` in a subprocess, "
                  "its own run directory); runs already complete (summary.json with test/nll) are skipped.",
                  EXPERIMENT_ARGS, argv)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be an integer >= 1, got {args.threads}")
    experiment = load_experiment(args.definition)
    status = execute(experiment, args.variant, args.out, only=args.only, dry_run=args.dry_run,
                     threads=args.threads, overrides=parse_set(args.overrides))
    counts = {s: list(status.values()).count(s) for s in sorted(set(status.values()))}
    print(f"{experiment.name}/{args.variant}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if any(s in ("failed", "blocked") for s in status.values()):
        sys.exit(1)


def report_main(argv: list[str]) -> None:
    from .report import write_report

    args = _parse("iwae_pl report", "Collect every run directory (summary.json) under RUNS and write a Markdown "
                  "page with the papers' tables next to the published numbers, and PNG figures.", REPORT_ARGS, argv)
    notes = ""
    if args.notes is not None:
        try:
            notes = Path(args.notes).read_text()
        except OSError as err:
            raise DataError(f"cannot read --notes file {args.notes!r}: {err.strerror}") from err
    path = write_report(args.runs, args.out, title=args.title, notes=notes, page=args.page)
    print(f"report: {path}")


COMMANDS["experiment"] = (experiment_main, "run an experiment definition's runs (sweeps/experiments/*.yaml)")
COMMANDS["report"] = (report_main, "tables and figures of finished runs next to the published numbers")
