"""``iwae_pl plot <run dirs...> --out DIR``: figures that compare runs, drawn from their metrics.csv.

For every diagnostic the runs logged, one figure with a line per run (``ess_comparison.png``,
``activity_comparison.png``, ``snr_comparison.png``, ``val_nll_comparison.png``), plus each run's
latest activity and weight histograms copied as ``activity_<run>.png`` and ``ess_weights_<run>.png``:
the README's VAE-vs-IWAE figures, regenerated from the two runs::

    python -m iwae_pl plot logs/cmp_vae_k50/version_0 logs/cmp_iwae_k50/version_0 --out docs/figures
"""
from __future__ import annotations

import argparse
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from ..diagnostics.figures import DPI, curves_figure
from ..errors import DataError
from .result import read_curves

DESCRIPTION = "figures comparing runs (ESS, active units, SNR, val NLL) from their metrics.csv"
# figure name -> (title, [(ylabel, metric names (a {i} runs over the layers), log scale)])
COMPARISONS = {
    "ess_comparison": ("ESS during training", [("effective sample size (per group of K)", "ess/group", False),
                                               ("weights > threshold per group", "ess/above_threshold", False)]),
    "activity_comparison": ("active units", [("active units, layer {i}", "active/layer{i}", False)]),
    "snr_comparison": ("gradient SNR", [("encoder SNR", "snr/encoder", True), ("decoder SNR", "snr/decoder", True)]),
    "val_nll_comparison": ("validation NLL", [("val NLL = -L_k (nats)", "val/nll", False)]),
}


@dataclass
class RunCurves:
    """One run's per-epoch metrics: ``series[name] = (epochs, values)``, first value of each epoch."""

    run_dir: Path
    name: str
    objective: str | None = None
    M: int | None = None
    K: int | None = None
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        what = f"{self.objective.upper()} (M={self.M}, K={self.K})" if self.objective else "?"
        return f"{self.name}: {what}"


def read_run(run_dir: str | Path) -> RunCurves:
    """The curves of a run directory (``metrics.csv``; objective, M and K from ``config.yaml`` if present)."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        raise DataError(f"{run_dir}: no metrics.csv; give run directories (<save_dir>/<name>/version_N/) "
                        "of runs logged with the CSV logger")
    run = RunCurves(run_dir, f"{run_dir.resolve().parent.name}/{run_dir.name}")
    config = run_dir / "config.yaml"
    if config.is_file():
        model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
        run.objective, run.M, run.K = model.get("objective"), model.get("M"), model.get("K")
    for name, points in read_curves(run_dir).items():
        epochs, values = run.series.setdefault(name, ([], []))
        for epoch, value in points:
            if epoch not in epochs[-1:]:  # the first value of an epoch (a later test repeats the epoch)
                epochs.append(epoch)
                values.append(value)
    return run


def _layers(runs: Sequence[RunCurves]) -> list[int]:
    found = {int(m.group(1)) for r in runs for n in r.series if (m := re.fullmatch(r"active/layer(\d+)", n))}
    return sorted(found)


def comparison_figures(runs: Sequence[RunCurves]) -> dict:
    """{figure name: Figure} for each comparison that at least one run has data for; a line per run."""
    names = " vs ".join(r.name for r in runs)
    figures = {}
    for key, (what, panels) in COMPARISONS.items():
        expanded = []
        for ylabel, metric, log_y in panels:
            layers = _layers(runs) if "{i}" in metric else [None]
            expanded += [(ylabel.format(i=i), metric.format(i=i), log_y) for i in layers]
        drawn = [(ylabel, [(r.label, *r.series[metric]) for r in runs if metric in r.series], log_y)
                 for ylabel, metric, log_y in expanded]
        drawn = [p for p in drawn if p[1]]
        if drawn:
            figures[key] = curves_figure(drawn, f"{what} - {names}")
    return figures


def _latest(figures: Path, pattern: str) -> Path | None:
    found = sorted(figures.glob(pattern))
    return found[-1] if found else None


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path) -> list[Path]:
    """Write the comparison figures of ``run_dirs`` and copies of their latest histograms into ``out``."""
    runs = [read_run(d) for d in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, fig in comparison_figures(runs).items():
        path = out / f"{key}.png"
        fig.savefig(path, dpi=DPI, metadata={"Title": fig.get_suptitle()})
        written.append(path)
    stems = [r.run_dir.resolve().parent.name for r in runs]
    for run, stem in zip(runs, stems):
        stem = stem if stems.count(stem) == 1 else f"{stem}_{run.run_dir.name}"
        figures = run.run_dir / "figures"
        for kind, source in (("activity", _latest(figures, "activity_test.png") or _latest(figures, "activity_epoch*.png")),
                             ("ess_weights", _latest(figures, "ess_weights_epoch*.png"))):
            if source is not None:
                written.append(Path(shutil.copyfile(source, out / f"{kind}_{stem}.png")))
    if not written:
        raise DataError(f"nothing to plot: {', '.join(map(str, run_dirs))} logged no ESS, activity, SNR or "
                        "val/nll (run them with the diagnostics callbacks, e.g. sweeps/diagnostics.yaml)")
    return written


def main(argv: Sequence[str]) -> list[Path]:
    parser = argparse.ArgumentParser(prog="iwae_pl plot", description=DESCRIPTION[0].upper() + DESCRIPTION[1:] + ".")
    parser.add_argument("runs", nargs="+", help="run directories (<save_dir>/<name>/version_N/)")
    parser.add_argument("--out", required=True, help="directory for the figures (created)")
    args = parser.parse_args(list(argv))
    written = plot_runs(args.runs, args.out)
    for path in written:
        print(path)
    return written


def _register() -> None:
    from ..commands import COMMANDS

    COMMANDS["plot"] = (main, DESCRIPTION)


_register()
