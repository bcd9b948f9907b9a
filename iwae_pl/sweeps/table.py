"""``python -m iwae_pl sweep-report``: a study or a folder of runs as a table and plots.

One row per run (per trial for a study): the split M×K, objective, estimator, best validation bound
(the highest ``val/bound`` logged), test NLL, active units and ESS when they were logged, and each
searched parameter. Written as Markdown and CSV, with a PNG of a metric against M at fixed M·K (one
line per objective and budget: Rainforth et al.'s figure) and, for two searched parameters, a heatmap.
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..errors import ConfigError, DataError
from ..runs.result import SUMMARY, RunResult, read_curves, run_dirs
from .spec import SPLIT

COLUMNS = ("trial", "state", "split", "M", "K", "objective", "estimator", "best val/bound", "test/nll",
           "active units", "ESS")
# column -> (metric name in summary.json, description)
_LOGGED = {"test/nll": "test/nll", "active units": "active/total", "ESS": "ess/group"}


def _best_logged(run_dir: Path, name: str) -> float | None:
    """The highest finite value of ``name`` in the run's metrics.csv (None if never logged)."""
    values = [v for _, v in read_curves(run_dir).get(name, []) if math.isfinite(v)]
    return max(values) if values else None


def run_row(run_dir: Path) -> dict[str, Any]:
    """The table row of one run directory (its config.yaml and summary.json)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    model = (config or {}).get("model") or {}
    try:
        metrics = RunResult.load(run_dir).metrics
    except FileNotFoundError:
        metrics = {}
    M, K = model.get("M", 1), model.get("K")
    row: dict[str, Any] = {"M": M, "K": K, "split": f"{M}×{K}" if K else "", "objective": model.get("objective", ""),
                           "estimator": model.get("estimator", "reparam"), "run_dir": str(run_dir)}
    best = _best_logged(run_dir, "val/bound")
    row["best val/bound"] = best if best is not None else metrics.get("val/bound")
    for column, name in _LOGGED.items():
        row[column] = metrics.get(name)
    return row


def runs_rows(folder: Path) -> list[dict[str, Any]]:
    """Rows of every run below ``folder`` (a run is a directory with a summary.json)."""
    rows = [dict(run_row(d), state="COMPLETE") for d in run_dirs(folder)]
    if not rows:
        raise DataError(f"no runs (directories with {SUMMARY}) found below {str(folder)!r}")
    return rows


def study_rows(address: str, study_name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every trial of a study (journal file path or RDB URL), and the searched parameter names."""
    import optuna

    from .pruning import open_storage

    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(address))
    except KeyError:
        raise DataError(f"no study {study_name!r} in {address!r}") from None
    rows, params = [], []
    for t in study.get_trials(deepcopy=False):
        run_dir = Path(t.user_attrs.get("run_dir", ""))
        row = run_row(run_dir) if run_dir.is_dir() else {}
        row.update(trial=t.number, state=t.state.name, value=t.value, error=t.user_attrs.get("error", ""))
        for name, value in t.params.items():
            if name == SPLIT:  # its value is M, already a column
                continue
            row[name] = value
            if name not in params:
                params.append(name)
        rows.append(row)
    return rows, params


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 else f"{value:.2f}"
    return str(value)


def markdown(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (missing values left blank)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], columns: Sequence[str], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def split_plot(rows: Sequence[dict], path: Path, metrics: Sequence[str] = ("best val/bound", "test/nll")) -> Path | None:
    """Each metric against M (log scale) at fixed M·K, one line per (objective, M·K); None if no row
    has a split and a value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [m for m in metrics if any(r.get(m) is not None and r.get("K") for r in rows)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        lines: dict[tuple, dict[int, list[float]]] = {}
        for r in rows:
            if r.get(metric) is None or not r.get("K") or r.get("state", "COMPLETE") != "COMPLETE":
                continue
            # MIWAE(1, K) is IWAE(K): an IWAE run is the M = 1 point of the MIWAE line
            key = ("miwae" if r["objective"] == "iwae" else r["objective"], r["M"] * r["K"])
            lines.setdefault(key, {}).setdefault(r["M"], []).append(r[metric])
        for (objective, budget), points in sorted(lines.items()):
            ms = sorted(points)
            ax.plot(ms, [sum(points[m]) / len(points[m]) for m in ms], "o-", label=f"{objective}, M·K = {budget}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M (outer samples); K = budget / M")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def heatmap(rows: Sequence[dict], x: str, y: str, metric: str, path: Path) -> Path:
    """The mean ``metric`` over runs for each pair of values of the parameters ``x`` and ``y``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get(x) is not None and r.get(y) is not None and r.get(metric) is not None:
            cells.setdefault((r[x], r[y]), []).append(r[metric])
    if not cells:
        raise ConfigError(f"no run has values for both {x!r} and {y!r} and the metric {metric!r}")
    xs = sorted({k[0] for k in cells}, key=str if any(isinstance(k[0], str) for k in cells) else float)
    ys = sorted({k[1] for k in cells}, key=str if any(isinstance(k[1], str) for k in cells) else float)
    grid = np.full((len(ys), len(xs)), np.nan)
    for (vx, vy), values in cells.items():
        grid[ys.index(vy), xs.index(vx)] = sum(values) / len(values)
    fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 2.5, 0.8 * len(ys) + 2))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_fmt(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    fig.colorbar(image, ax=ax, label=metric)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def report_main(argv: list[str]) -> int:
    """``python -m iwae_pl sweep-report (--config STUDY.yaml | --storage ADDR --study-name N | --runs DIR)``."""
    parser = argparse.ArgumentParser(prog="iwae_pl sweep-report", description="Table and plots of a sweep.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a study file: its study in its storage (journal in --dir by default)")
    source.add_argument("--storage", help="a journal file path or an RDB URL (with --study-name)")
    source.add_argument("--runs", help="a folder of runs (any directories with summary.json below it)")
    parser.add_argument("--study-name", help="the study's name (with --storage; default: the study file's)")
    parser.add_argument("--dir", help="the sweep directory (with --config; default: the study file's sweep_dir)")
    parser.add_argument("--out", help="where to write sweep_report.{md,csv} and the PNGs (default: the sweep "
                                      "directory or the runs folder)")
    parser.add_argument("--plot", default="sweep_mk.png", help="file name of the metric-vs-M plot")
    parser.add_argument("--heatmap", nargs=2, metavar=("X", "Y"), help="two searched parameters for a heatmap")
    parser.add_argument("--heatmap-metric", default="best val/bound", help="the heatmap's metric column")
    args = parser.parse_args(argv)
    params: list[str] = []
    if args.runs:
        rows, out = runs_rows(Path(args.runs)), Path(args.out or args.runs)
    else:
        if args.config:
            from .optuna_driver import storage_address
            from .spec import load_spec

            spec = load_spec(args.config)
            sweep_dir = Path(args.dir or spec.sweep_dir)
            address, name = storage_address(spec, sweep_dir), args.study_name or spec.study_name
            out = Path(args.out or sweep_dir)
        else:
            if not args.study_name:
                raise ConfigError("--storage needs --study-name")
            address, name, out = args.storage, args.study_name, Path(args.out or ".")
        rows, params = study_rows(address, name)
    columns = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    columns += [p for p in params if p not in columns] + (["error"] if any(r.get("error") for r in rows) else [])
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, columns)
    (out / "sweep_report.md").write_text(text)
    write_csv(rows, columns + ["run_dir"], out / "sweep_report.csv")
    print(text, end="")
    plot = split_plot(rows, out / args.plot)
    if plot is not None:
        print(f"plot: {plot}")
    if args.heatmap:
        x, y = args.heatmap
        print(f"heatmap: {heatmap(rows, x, y, args.heatmap_metric, out / f'heatmap_{x}_{y}.png'.replace('/', '_'))}")
    return 0
