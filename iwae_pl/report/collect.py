"""Reading finished runs: every run directory under a folder (``summary.json``, ``config.yaml``,
``metrics.csv``, ``figures/``, the runner's ``run_info.json``) and the runner's manifests
(``experiment.json``: the runs an experiment variant intended, so the report can mark missing ones).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..runs.result import RunResult, read_curves, run_dirs, test_pass_dirs
from .experiments import MANIFEST, RUN_INFO

@dataclass
class Run:
    """One finished run as the report sees it.

    Attributes:
        path: the run directory. name: its name (the directory name unless run_info says otherwise).
        experiment, variant, study: from the runner's run_info.json, else inferred (variant '').
        objective, M, K, beta, estimator: the trained objective. latents: units per stochastic layer,
        bottom-up. hidden1: the first layer's deterministic sizes. dataset, seed.
        epochs, train_batches (None = the whole training set per epoch), batch_size, test_k: the budget.
        metrics: the final metrics of summary.json. extra_nll: test_k -> test NLL of the extra test passes.
        curves: metric -> [(epoch, value)] from metrics.csv. figures: PNGs the callbacks wrote.
    """

    path: Path
    name: str
    experiment: str
    variant: str
    study: str
    objective: str
    M: int
    K: int
    beta: float | None
    estimator: str
    latents: tuple[int, ...]
    hidden1: tuple[int, ...]
    dataset: str
    seed: int
    epochs: int | None
    train_batches: int | float | None
    batch_size: int
    test_k: int
    metrics: dict[str, float]
    extra_nll: dict[int, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return len(self.latents)

    @property
    def active(self) -> tuple[int, ...] | None:
        """Active units per layer (the last measurement), None if the run did not count them."""
        counts = [self.metrics.get(f"active/layer{i}") for i in range(1, self.depth + 1)]
        if any(c is None or not math.isfinite(c) for c in counts):
            return None
        return tuple(int(round(c)) for c in counts)

    def metric(self, name: str) -> float | None:
        value = self.metrics.get(name)
        return value if value is not None and math.isfinite(value) else None

    @property
    def train_points(self) -> int | None:
        """Training points per epoch when the run limited its batches to a count (None: whole set or fraction)."""
        # Lightning reads 1 / 1.0 as "all batches", other values > 1 as a count; the saved config writes 100.0
        b = self.train_batches
        if isinstance(b, (int, float)) and not isinstance(b, bool) and b > 1 and float(b).is_integer():
            return int(b) * self.batch_size
        return None

    def figure(self, prefix: str) -> Path | None:
        """The run's last figure whose name starts with ``prefix`` (e.g. ``activity_test``)."""
        found = sorted(p for p in self.figures if p.name.startswith(prefix))
        return found[-1] if found else None


def _infer_study(objective: str, M: int, K: int, latents: tuple[int, ...], hidden1: tuple[int, ...]) -> str:
    """The study a run without run_info belongs to, from its settings (see the report's README section)."""
    if M * K == 64 and len(latents) == 1 and hidden1 == (200, 200):
        return "rainforth_mk64"
    if hidden1 == (100, 100) and latents[0] == 50 and objective in ("vae", "iwae"):
        return "report_depth"
    if objective in ("vae", "iwae") and M == 1:
        return "burda_table1"
    return "other"


def load_run(directory: Path) -> Run:
    """A run directory -> Run (FileNotFoundError without summary.json or config.yaml)."""
    result = RunResult.load(directory)
    config = yaml.safe_load((directory / "config.yaml").read_text()) or {}
    model, data, trainer = config.get("model", {}) or {}, config.get("data", {}) or {}, config.get("trainer", {}) or {}
    info_path = directory / RUN_INFO
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    layers = model.get("layers") or [{"latent": 50, "hidden": [200, 200]}]
    latents = tuple(int(layer["latent"]) for layer in layers)
    hidden1 = tuple(int(h) for h in layers[0].get("hidden", (200, 200)))
    objective = str(model.get("objective", "iwae"))
    M, K = int(model.get("M", 1) or 1), int(model.get("K", 1) or 1)
    extra = {k: nll for k, sub in test_pass_dirs(directory).items()
             if (nll := RunResult.load(sub).metrics.get("test/nll")) is not None}
    figure_dir = directory / "figures"
    return Run(
        path=directory, name=str(info.get("name", directory.name)), experiment=str(info.get("experiment", "")),
        variant=str(info.get("variant", "")),
        study=str(info.get("study") or _infer_study(objective, M, K, latents, hidden1)),
        objective=objective, M=M, K=K, beta=model.get("beta"), estimator=str(model.get("estimator", "reparam")),
        latents=latents, hidden1=hidden1, dataset=str(data.get("dataset", "digits")),
        seed=int(config.get("seed_everything") or 0), epochs=trainer.get("max_epochs"),
        train_batches=trainer.get("limit_train_batches"), batch_size=int(data.get("batch_size", 20) or 20),
        test_k=int(model.get("test_k", 5000) or 5000), metrics=result.metrics, extra_nll=extra,
        curves=read_curves(directory),
        figures=sorted(figure_dir.glob("*.png")) if figure_dir.is_dir() else [])


def find_runs(root: str | os.PathLike) -> list[Run]:
    """Every run below ``root`` (``runs.result.run_dirs``) that has its config.yaml."""
    return [load_run(d) for d in run_dirs(root) if (d / "config.yaml").exists()]


def find_manifests(root: str | os.PathLike) -> list[dict[str, Any]]:
    """The runner's manifests below ``root`` (``experiment.json``), each with its folder as ``dir``."""
    out = []
    for path in sorted(Path(root).rglob(MANIFEST)):
        manifest = json.loads(path.read_text())
        manifest["dir"] = path.parent
        out.append(manifest)
    return out
