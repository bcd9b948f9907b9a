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

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

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

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "RunResult":
        """The summary a run wrote into ``run_dir`` (FileNotFoundError if it has none)."""
        data = json.loads((Path(run_dir) / SUMMARY).read_text())
        data["metrics"] = {k: float(v) for k, v in data.get("metrics", {}).items()}
        return cls(**data)
