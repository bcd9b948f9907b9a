"""What a finished run leaves behind: its directory, final metrics and checkpoints (``summary.json``).

A run directory is the logger's version directory (``<save_dir>/<name>/version_N/``) and holds::

    config.yaml      the resolved config: ``python -m iwae_pl fit --config <run_dir>/config.yaml`` re-runs it
    checkpoints/     best and last checkpoints (ModelCheckpoint)
    metrics.csv      the logged metrics (CSVLogger)
    figures/         the diagnostics callbacks' PNGs
    summary.json     this module's ``RunResult``: final metrics of fit, validate and test, checkpoints

Sweeps, resume and the report read runs through ``RunResult.load``.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

Curves = dict[str, list[tuple[int, float]]]  # metric -> [(epoch, value)]

SUMMARY = "summary.json"


def _number(value: Any) -> float | None:
    """A logged value as a plain float (tensors and numpy scalars included); None if it is not a number."""
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None


@dataclass
class RunResult:
    """The outcome of one run.

    Attributes:
        run_dir: the run directory (None when the run had no logger).
        metrics: final value of every logged metric, e.g. ``{"val/nll": 88.1, "test/nll": 87.9}``;
            non-finite values are kept (as NaN/inf), never dropped.
        best_checkpoint, last_checkpoint: paths ('' when none was written).
        best_score: the monitored metric at the best checkpoint (None without a monitor).
        subcommand: fit, validate or test. stopped: why training ended early ('' if it did not).
    """

    run_dir: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    best_checkpoint: str = ""
    last_checkpoint: str = ""
    best_score: float | None = None
    subcommand: str = "fit"
    stopped: str = ""

    def update_metrics(self, metrics: Mapping[str, Any]) -> None:
        for name, value in metrics.items():
            number = _number(value)
            if number is not None:
                self.metrics[name] = number

    def save(self) -> Path | None:
        """Write ``summary.json`` into the run directory (atomically: a kill never leaves half a file)."""
        if self.run_dir is None:
            return None
        path = Path(self.run_dir) / SUMMARY
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SUMMARY}.{os.getpid()}.tmp")
        data = asdict(self)
        data["metrics"] = {k: (v if math.isfinite(v) else str(v)) for k, v in self.metrics.items()}
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    def format_summary(self) -> str:
        """A short table of the final metrics and where the run's files are, for the end of a command.

        The model's own metrics (``train/``, ``val/``, ``test/``) come first, then the diagnostics'.
        """
        own = ("train/", "val/", "test/")
        names = sorted(self.metrics, key=lambda n: (not n.startswith(own), n))
        lines = [f"iwae_pl {self.subcommand} finished" + (f" ({self.stopped})" if self.stopped else "") + ":"]
        if names:
            width = max(len(n) for n in names)
            lines += [f"  {n:<{width}}  {self.metrics[n]:.4f}" for n in names]
        else:
            lines.append("  (no metrics logged)")
        if self.run_dir is None:
            lines.append("run directory: none (no logger)")
            return "\n".join(lines)
        run_dir = Path(self.run_dir)
        lines.append(f"run directory: {run_dir}")
        files = [(name, run_dir / name) for name in ("config.yaml", "metrics.csv", SUMMARY)]
        lines += [f"  {name:<12} {path}" for name, path in files if path.is_file() or name == SUMMARY]
        if self.best_checkpoint:
            score = "" if self.best_score is None else f" (monitored value {self.best_score:.4f})"
            lines.append(f"  {'best ckpt':<12} {self.best_checkpoint}{score}")
        if self.last_checkpoint:
            lines.append(f"  {'last ckpt':<12} {self.last_checkpoint}")
        figures = run_dir / "figures"
        if figures.is_dir():
            lines.append(f"  {'figures':<12} {figures}/ ({len(list(figures.glob('*.png')))} PNG files)")
        return "\n".join(lines)

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "RunResult":
        """The summary a run wrote into ``run_dir`` (FileNotFoundError if it has none)."""
        data = json.loads((Path(run_dir) / SUMMARY).read_text())
        data["metrics"] = {k: float(v) for k, v in data.get("metrics", {}).items()}
        return cls(**data)


TEST_PASS = "test_k"  # <run_dir>/test_k<k>/: an extra test pass of the run with test_k = k


def test_pass_dir(run_dir: str | os.PathLike, k: int) -> Path:
    """Where the extra test pass of ``run_dir`` with ``test_k = k`` logs (its own summary.json)."""
    return Path(run_dir) / f"{TEST_PASS}{k}"


def test_pass_dirs(run_dir: str | os.PathLike) -> dict[int, Path]:
    """k -> directory of every extra test pass inside ``run_dir`` that has its summary.json."""
    return {int(d.name[len(TEST_PASS):]): d for d in sorted(Path(run_dir).glob(f"{TEST_PASS}*"))
            if d.name[len(TEST_PASS):].isdigit() and (d / SUMMARY).exists()}


def run_dirs(root: str | os.PathLike) -> list[Path]:
    """Every run directory below ``root`` (a folder with summary.json), in sorted order, except the
    extra test passes inside a run (``test_pass_dir``), which belong to their run."""
    found = []
    for summary in sorted(Path(root).rglob(SUMMARY)):
        directory = summary.parent
        if not (directory.name.startswith(TEST_PASS) and (directory.parent / SUMMARY).exists()):
            found.append(directory)
    return found


def read_curves(run_dir: str | os.PathLike) -> Curves:
    """metric -> [(epoch, value)] in file order from the run's metrics.csv (CSVLogger; blank cells and
    rows without an epoch skipped); {} when the run has no metrics.csv."""
    path = Path(run_dir) / "metrics.csv"
    curves: Curves = {}
    if not path.is_file():
        return curves
    with open(path, newline="") as stream:
        for row in csv.DictReader(stream):
            try:
                epoch = int(float(row.get("epoch") or "nan"))
            except ValueError:
                continue
            for key, cell in row.items():
                if key in (None, "epoch", "step") or not isinstance(cell, str) or cell == "":
                    continue
                try:
                    curves.setdefault(key, []).append((epoch, float(cell)))
                except ValueError:
                    continue
    return curves
