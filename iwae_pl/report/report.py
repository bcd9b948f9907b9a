"""``python -m iwae_pl report <runs> --out <dir>``: the papers' tables and figures from finished runs.

Every measured cell stands next to the published value (``published.yaml``) and the difference;
a cell without a run says ``missing`` (nothing is ever filled in). Runs are grouped by study (Burda
Table 1, Table 2, the reproduction report's depth study, Rainforth et al.) and budget variant; the
runner's manifests name the runs each variant intended, so missing runs are listed too.
The ``claims`` section checks the papers' statements on the measured numbers, one line each.
"""
from __future__ import annotations

import math
import shutil
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import DataError
from . import figures
from .collect import Run, find_manifests, find_runs
from .published import Published, lookup, papers

MISSING = "missing"
STUDY_TITLES = {
    "burda_table1": "Burda et al. (2015), Table 1: test NLL and active units",
    "burda_table2": "Burda et al. (2015), Table 2: continuing a trained VAE with IWAE and vice versa",
    "report_depth": "The reproduction report: k = 50 with 1..7 stochastic layers (Figure 2, Tables 1-2, Figures 3-7)",
    "rainforth_mk64": "Rainforth et al. (2018): bounds, log p and gradient SNR at M*K = 64",
    "other": "Other runs",
}
RAINFORTH_ROWS = (("IWAE (1, 64)", "iwae", 1, 64), ("PIWAE (8, 8)", "piwae", 8, 8), ("MIWAE (8, 8)", "miwae", 8, 8),
                  ("CIWAE β = 0.5", "ciwae", 1, 64), ("VAE (64)", "vae", 1, 64))
GRID_M = (1, 2, 4, 8, 16, 32, 64)


# ------------------------------------------------------------------------------------------ numbers

@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for one value) and count of a cell's values (one per seed)."""

    mean: float
    sd: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> "Stat | None":
        vals = [v for v in values if v is not None and math.isfinite(v)]
        if not vals:
            return None
        return cls(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))

    def text(self, digits: int = 2) -> str:
        out = f"{self.mean:.{digits}f}"
        if self.sd is not None:
            out += f" ± {self.sd:.{digits}f} (n={self.n})"
        return out


def units_text(counts: Sequence[int] | None) -> str:
    """Active units per layer the papers' way: ``26+7``."""
    return MISSING if counts is None else "+".join(str(c) for c in counts)


def number_cell(stat: Stat | None, published: Sequence[Published] = (), digits: int = 2,
                compare: bool = True) -> str:
    """``measured · pub P · Δ D`` (Δ = measured - published); ``missing`` when there is no run.
    ``compare=False`` shows the published value without a difference (another dataset or budget)."""
    parts = [MISSING if stat is None else stat.text(digits)]
    for p in published[:1]:
        parts.append(f"pub {p.value:.{digits}f}")
        if stat is not None and compare:
            parts.append(f"Δ {stat.mean - p.value:+.{digits}f}")
    return " · ".join(parts)


def units_cell(runs: Sequence[Run], published: Sequence[Published] = ()) -> str:
    """Measured active units per seed (``26+7 / 25+6``) and every published count with its paper."""
    measured = [units_text(r.active) for r in runs if r.active is not None]
    text = " / ".join(measured) if measured else MISSING
    pubs = [f"{units_text(p.value)} ({p.paper})" for p in published]
    return text + (" · pub " + ", ".join(pubs) if pubs else "")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def final_ess(run: Run) -> float | None:
    return run.metric("ess/group")


def _pick(runs: Iterable[Run], **want: Any) -> list[Run]:
    """The runs whose attributes equal ``want`` (``depth`` included), sorted by seed."""
    return sorted((r for r in runs if all(getattr(r, k) == v for k, v in want.items())), key=lambda r: r.seed)


def _mean_attr(runs: Sequence[Run], fn: Callable[[Run], float | None]) -> Stat | None:
    return Stat.of(fn(r) for r in runs)


def log_p(run: Run) -> float | None:
    nll = run.metric("test/nll")
    return None if nll is None else -nll


def iwae64_bound(run: Run) -> float | None:
    """The IWAE bound with 64 samples on the test set: the extra test pass with test_k = 64, else the
    main test when it used test_k = 64."""
    if 64 in run.extra_nll:
        return -run.extra_nll[64]
    return log_p(run) if run.test_k == 64 else None


def neg_kl(run: Run) -> float | None:
    bound, lp = iwae64_bound(run), log_p(run)
    return None if bound is None or lp is None else bound - lp


# ------------------------------------------------------------------------------------------ sections

@dataclass
class Section:
    """One study at one budget variant: its runs, the runs its manifests intended, its budget note."""

    study: str
    variant: str
    runs: list[Run]
    intended: list[dict[str, Any]]
    notes: list[str]
    commands: list[str]

    @property
    def key(self) -> str:
        return f"{self.study}_{self.variant or 'runs'}"

    @property
    def missing(self) -> list[str]:
        have = {r.name for r in self.runs}
        return [m["name"] for m in self.intended if m["name"] not in have]


def build_sections(runs: Sequence[Run], manifests: Sequence[dict[str, Any]]) -> list[Section]:
    grouped: dict[tuple[str, str], Section] = {}
    for manifest in manifests:
        key = (manifest.get("study", manifest["experiment"]), manifest["variant"])
        section = grouped.setdefault(key, Section(key[0], key[1], [], [], [], []))
        section.intended += manifest["runs"]
        if manifest.get("note"):
            section.notes.append(" ".join(str(manifest["note"]).split()))
        if manifest.get("definition"):
            section.commands.append(f"python -m iwae_pl experiment {manifest['definition']} --variant {key[1]}")
    for run in runs:
        key = (run.study, run.variant)
        grouped.setdefault(key, Section(key[0], key[1], [], [], [], [])).runs.append(run)
    order = {s: i for i, s in enumerate(STUDY_TITLES)}
    return sorted(grouped.values(), key=lambda s: (order.get(s.study, 99), s.variant))


def budget_lines(section: Section) -> list[str]:
    """What the runs of a section actually did (from their configs), one line per distinct budget."""
    seen = defaultdict(list)
    for r in section.runs:
        per_epoch = f"{r.train_points:,} training points" if r.train_points else "the whole training set"
        seen[(r.dataset, r.epochs, per_epoch, r.test_k)].append(r.seed)
    return [f"- {n} run(s) on `{d}`: {e} epoch(s) of {p}, test NLL = −L_{k} on the whole test split, "
            f"seeds {sorted(set(s))}" for (d, e, p, k), s in sorted(seen.items(), key=str) for n in [len(s)]]


# --- Burda Table 1 ---------------------------------------------------------------------------------

def burda_rows(section: Section) -> list[tuple[str, int]]:
    rows = {(r.dataset, r.depth) for r in section.runs}
    rows |= {(m["dataset"], m["layers"]) for m in section.intended if "dataset" in m}
    order = {"mnist": 0, "binarized_mnist": 1, "omniglot": 2}
    return sorted(rows, key=lambda dl: (order.get(dl[0], 9), dl[0], dl[1]))


def burda_tables(section: Section, fig_dir: Path, rel: str) -> list[str]:
    columns = [(o, k) for o in ("vae", "iwae") for k in (1, 5, 50)]
    header = ["data, layers"] + [f"{o.upper()} k={k}" for o, k in columns]
    nll_rows, unit_rows, ess_rows, gap_rows = [], [], [], []
    for dataset, depth in burda_rows(section):
        label = f"{dataset}, {depth}"
        cells_nll, cells_units, cells_ess = [label], [label], [label]
        for objective, k in columns:
            runs = _pick(section.runs, dataset=dataset, depth=depth, objective=objective, K=k, M=1)
            setting = dict(objective=objective, K=k, layers=depth)
            cells_nll.append(number_cell(_mean_attr(runs, lambda r: r.metric("test/nll")),
                                         lookup("test_nll", dataset, **setting)))
            cells_units.append(units_cell(runs, lookup("active_units", dataset, **setting)))
            cells_ess.append(number_cell(_mean_attr(runs, final_ess)))
        nll_rows.append(cells_nll)
        unit_rows.append(cells_units)
        ess_rows.append(cells_ess)
        gaps = [label]
        for k in (1, 5, 50):
            gap = _gap(section.runs, dataset, depth, k)
            pub_v, pub_i = (lookup("test_nll", dataset, objective=o, K=k, layers=depth) for o in ("vae", "iwae"))
            pub = f" · pub {pub_v[0].value - pub_i[0].value:+.2f}" if pub_v and pub_i else ""
            gaps.append((MISSING if gap is None else gap.text()) + pub)
        gap_rows.append(gaps)
    out = ["**Test NLL** (nats, lower is better; `pub` = published, Δ = measured − published):", ""]
    out += _md_table(header, nll_rows)
    out += ["**Gap** NLL(VAE) − NLL(IWAE) at the same k (positive: IWAE better; per seed pair, then mean):", ""]
    out += _md_table(["data, layers", "k=1", "k=5", "k=50"], gap_rows)
    out += ["**Active units** per layer (A_u > 0.01; bottom layer first, one entry per seed):", ""]
    out += _md_table(header, unit_rows)
    out += ["**ESS** of the training weights in the last epoch (1 ≤ ESS ≤ k):", ""]
    out += _md_table(header, ess_rows)
    out += _burda_figures(section, fig_dir, rel)
    return out


def _gap(runs: Sequence[Run], dataset: str, depth: int, k: int) -> Stat | None:
    """NLL(VAE) - NLL(IWAE), paired by seed where both exist."""
    pick = {o: {r.seed: r.metric("test/nll") for r in _pick(runs, dataset=dataset, depth=depth, objective=o, K=k, M=1)}
            for o in ("vae", "iwae")}
    return Stat.of(pick["vae"][s] - pick["iwae"][s] for s in pick["vae"]
                   if s in pick["iwae"] and None not in (pick["vae"][s], pick["iwae"][s]))


def _burda_figures(section: Section, fig_dir: Path, rel: str) -> list[str]:
    panels, bars = [], []
    for dataset, depth in burda_rows(section):
        series, pubs = {}, {}
        for objective in ("vae", "iwae"):
            label = f"{objective.upper()}"
            points = []
            for k in (1, 5, 50):
                runs = _pick(section.runs, dataset=dataset, depth=depth, objective=objective, K=k, M=1)
                stat = _mean_attr(runs, lambda r: r.metric("test/nll"))
                if stat is not None:
                    points.append((k, stat.mean))
                    if runs[0].active is not None:
                        bars.append((f"{dataset} {depth}L {label} k={k}", runs[0].active))
            series[label] = points
            pubs[label] = [(k, p[0].value) for k in (1, 5, 50)
                           for p in [lookup("test_nll", dataset, objective=objective, K=k, layers=depth)] if p]
        panels.append((f"{dataset}, {depth} stochastic layer(s)", series, pubs))
    out = []
    if any(s for _, series, _ in panels for s in series.values()):
        path = figures.save(figures.line_panels(panels, "k (samples)", "test NLL (nats)",
                                                f"Test NLL vs k ({section.variant or 'runs'})", logx=True),
                            fig_dir / f"{section.key}_nll_vs_k.png")
        out.append(f"![Test NLL vs k]({rel}/{path.name})")
    if bars:
        path = figures.save(figures.stacked_units([("first seed of each cell", bars)],
                                                  f"Active units per layer ({section.variant or 'runs'})"),
                            fig_dir / f"{section.key}_active_units.png")
        out.append(f"![Active units per layer]({rel}/{path.name})")
    return out + [""] if out else []


# --- Burda Table 2 ---------------------------------------------------------------------------------

def table2(section: Section) -> list[str]:
    rows = []
    for r in sorted(section.runs, key=lambda r: r.name):
        rows.append([r.name, r.objective.upper(), r.epochs, number_cell(Stat.of([r.metric("test/nll")])),
                     units_text(r.active)])
    rows += [[name, "", "", MISSING, MISSING] for name in section.missing]
    out = ["The source documents give no numbers for this table (published.yaml, claims): only that the VAE "
           "objective lowers a trained IWAE's active units and log-likelihood and the IWAE objective raises a "
           "VAE's. Runs named `*_from_X` continue run X's last checkpoint with the other objective.", ""]
    return out + _md_table(["run", "objective", "total epochs", "test NLL", "active units"], rows)


# --- the reproduction report's depth study -------------------------------------------------------

def depth_tables(section: Section, fig_dir: Path, rel: str) -> list[str]:
    epochs = sorted({r.epochs for r in section.runs} | {m.get("epochs") for m in section.intended} - {None})
    depths = sorted({r.depth for r in section.runs} | {m["layers"] for m in section.intended if "layers" in m})
    out = ["The report shows these as figures only (no numbers to compare): published statements are in the "
           "claims section below.", ""]
    nll_series, ess_series, unit_groups = {}, {}, []
    for e in epochs:
        rows = []
        for d in depths:
            row = [str(d)]
            for objective in ("vae", "iwae"):
                runs = _pick(section.runs, depth=d, objective=objective, epochs=e)
                nll = _mean_attr(runs, lambda r: r.metric("test/nll"))
                ess = _mean_attr(runs, final_ess)
                row += [number_cell(nll), units_cell(runs), number_cell(ess)]
                if nll is not None:
                    nll_series.setdefault(f"{objective.upper()}, {e} epochs", []).append((d, nll.mean))
                if ess is not None:
                    ess_series.setdefault(f"{objective.upper()}, {e} epochs", []).append((d, ess.mean))
            rows.append(row)
        out += [f"**{e} epoch(s)**: test NLL, active units per layer (bottom first), ESS of the last epoch (of k = 50):", ""]
        out += _md_table(["layers", "VAE NLL", "VAE active", "VAE ESS", "IWAE NLL", "IWAE active", "IWAE ESS"], rows)
        for objective in ("vae", "iwae"):
            bars = [(f"{d} layers", r.active) for d in depths
                    for r in _pick(section.runs, depth=d, objective=objective, epochs=e)[:1] if r.active is not None]
            if bars:
                unit_groups.append((f"{objective.upper()}, {e} epochs", bars))
    if nll_series:
        path = figures.save(figures.line_panels([("test NLL", nll_series, None), ("ESS (of 50)", ess_series, None)],
                                                "stochastic layers", "", "NLL and ESS vs depth, k = 50"),
                            fig_dir / f"{section.key}_depth.png")
        out.append(f"![NLL and ESS vs number of stochastic layers]({rel}/{path.name})")
    if unit_groups:
        path = figures.save(figures.stacked_units(unit_groups, "Active units per layer vs depth, k = 50"),
                            fig_dir / f"{section.key}_active_units.png")
        out.append(f"![Active units per layer vs depth]({rel}/{path.name})")
    out += _ess_curves(section, fig_dir, rel)
    out += _copied_figures(section, fig_dir, rel)
    return out + [""]


def _ess_curves(section: Section, fig_dir: Path, rel: str) -> list[str]:
    """ESS over epochs (report Figure 5) for the 3-layer runs (else the deepest with a curve)."""
    with_curve = [r for r in section.runs if len(r.curves.get("ess/group", [])) > 0]
    if not with_curve:
        return []
    depth = 3 if any(r.depth == 3 for r in with_curve) else max(r.depth for r in with_curve)
    chosen = [r for r in with_curve if r.depth == depth]
    series = {f"{r.objective.upper()} s{r.seed}, {r.epochs} ep": [(e + 1, v) for e, v in r.curves["ess/group"]]
              for r in chosen}
    above = {k: [(e + 1, v) for e, v in r.curves.get("ess/above_threshold", [])] for k, r in zip(series, chosen)}
    fig = figures.line_panels([("ESS (eq. 17)", series, None), ("weights above 0.01", above, None)],
                              "epoch", "", f"ESS during training, {depth} stochastic layers, k = 50")
    path = figures.save(fig, fig_dir / f"{section.key}_ess_over_epochs.png")
    return [f"![ESS over epochs]({rel}/{path.name})"]


def _copied_figures(section: Section, fig_dir: Path, rel: str) -> list[str]:
    """The runs' own log A_u histograms and normalized-weight distributions (report Figures 3-4, 7)."""
    out = []
    for prefix, what, prefer in (("activity_test", "log10 A_u per layer", 2), ("ess_weights_epoch", "normalized weights", 3)):
        for objective in ("vae", "iwae"):
            candidates = [r for r in section.runs if r.objective == objective and r.figure(prefix) is not None
                          and r.depth >= 2]
            if not candidates:
                continue
            depth = min((abs(r.depth - prefer), r.depth) for r in candidates)[1]  # the preferred depth, else the nearest
            for r in _pick(candidates, depth=depth)[:1]:
                src = r.figure(prefix)
                if src is None:
                    continue
                dst = fig_dir / f"{section.key}_{r.name}_{src.name}"
                shutil.copyfile(src, dst)
                out.append(f"![{what}, {objective.upper()} {depth} layers ({r.name})]({rel}/{dst.name})")
    return out


# --- Rainforth et al. ----------------------------------------------------------------------------

def _rainforth_run(section: Section, objective: str, M: int, K: int, estimator: str = "reparam") -> list[Run]:
    return _pick(section.runs, objective=objective, M=M, K=K, estimator=estimator)


def rainforth_tables(section: Section, fig_dir: Path, rel: str) -> list[str]:
    datasets = sorted({r.dataset for r in section.runs} | {m["dataset"] for m in section.intended if "dataset" in m})
    estimators = sorted({r.estimator for r in section.runs} | {m.get("estimator", "reparam") for m in section.intended})
    out = []
    for dataset in datasets:
        published_on = "mnist"
        same = dataset == published_on
        out += [f"**M·K = 64 on `{dataset}`** (nats; log p̂ = −test NLL = L_test_k, bound = L_64 on the test set, "
                f"−KL = bound − log p̂; published values are on dynamically binarized MNIST"
                + ("" if same else f", a different dataset than `{dataset}`, so no Δ is shown") + "):", ""]
        for estimator in estimators:
            rows = []
            for label, objective, M, K in RAINFORTH_ROWS:
                runs = [r for r in _rainforth_run(section, objective, M, K, estimator) if r.dataset == dataset]
                setting = dict(objective=objective, M=M, K=K, layers=1)
                if objective == "ciwae":
                    setting["beta"] = 0.5
                    runs = [r for r in runs if r.beta == 0.5]
                rows.append([f"{label}{'' if estimator == 'reparam' else ', ' + estimator}"]
                            + [number_cell(_mean_attr(runs, fn), lookup(m, published_on, **setting), compare=same)
                               for fn, m in ((iwae64_bound, "iwae64_bound"), (log_p, "log_p"), (neg_kl, "neg_kl"))]
                            + [number_cell(_mean_attr(runs, lambda r, n=n: r.metric(n)), digits=3)
                               for n in ("snr/encoder", "snr/decoder")]
                            + [number_cell(_mean_attr(runs, final_ess))])
            out += _md_table(["objective", "IWAE-64 bound", "log p̂", "−KL", "SNR encoder", "SNR decoder", "ESS (per group)"],
                             rows)
        out += _grid(section, dataset, estimators, fig_dir, rel)
    return out


def grid_run(section: Section, dataset: str, M: int, estimator: str) -> list[Run]:
    """The run at grid point (M, 64 / M): IWAE(1, 64) at M = 1, the VAE with 64 samples (= MIWAE(64, 1)) at
    M = 64, MIWAE(M, K) between."""
    objective, m, k = ("iwae", 1, 64) if M == 1 else ("vae", 1, 64) if M == 64 else ("miwae", M, 64 // M)
    return [r for r in _rainforth_run(section, objective, m, k, estimator) if r.dataset == dataset]


def _grid(section: Section, dataset: str, estimators: Sequence[str], fig_dir: Path, rel: str) -> list[str]:
    out, bound_series, snr_series = [], {}, {}
    for estimator in estimators:
        rows = []
        for M in GRID_M:
            runs = grid_run(section, dataset, M, estimator)
            stats = [_mean_attr(runs, fn) for fn in (iwae64_bound, log_p,
                                                     lambda r: r.metric("snr/encoder"), lambda r: r.metric("snr/decoder"))]
            rows.append([f"M={M}, K={64 // M}"] + [number_cell(s, digits=d) for s, d in zip(stats, (2, 2, 3, 3))])
            for label, s, store in ((f"IWAE-64 bound, {estimator}", stats[0], bound_series),
                                    (f"log p̂, {estimator}", stats[1], bound_series),
                                    (f"encoder, {estimator}", stats[2], snr_series),
                                    (f"decoder, {estimator}", stats[3], snr_series)):
                if s is not None:
                    store.setdefault(label, []).append((M, s.mean))
        out += [f"**The M × K = 64 grid** ({estimator}; M = 1 is IWAE(1, 64), M = 64 the VAE with 64 samples):", ""]
        out += _md_table(["M, K", "IWAE-64 bound", "log p̂", "SNR encoder", "SNR decoder"], rows)
    if bound_series or snr_series:
        fig = figures.line_panels([("bounds (nats)", bound_series, None), ("gradient SNR", snr_series, None)],
                                  "M (outer samples; K = 64 / M)", "", f"M x K = 64 on {dataset}", logx=True)
        path = figures.save(fig, fig_dir / f"{section.key}_{dataset}_mk_grid.png")
        out += [f"![Bound and SNR over the M x K grid]({rel}/{path.name})", ""]
    return out


# --- claims ----------------------------------------------------------------------------------------

def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**held**" if ok else "**did not hold**")


def claims(sections: Sequence[Section]) -> list[str]:
    """The papers' statements checked on the measured numbers (one line each; rules stated inline)."""
    lines = []
    for s in sections:
        tag = f"{s.study}/{s.variant or 'runs'}"
        if s.study == "burda_table1":
            lines += _burda_claims(s, tag)
        elif s.study == "report_depth":
            lines += _depth_claims(s, tag)
        elif s.study == "rainforth_mk64":
            lines += _rainforth_claims(s, tag)
    return lines


def _burda_claims(s: Section, tag: str) -> list[str]:
    lines = []
    for dataset, depth in burda_rows(s):
        gap50 = _gap(s.runs, dataset, depth, 50)
        if gap50 is not None:
            v = _pick(s.runs, dataset=dataset, depth=depth, objective="vae", K=50, M=1)
            i = _pick(s.runs, dataset=dataset, depth=depth, objective="iwae", K=50, M=1)
            tv = [sum(r.active) for r in v if r.active]
            ti = [sum(r.active) for r in i if r.active]
            lines.append(f"- {tag}, {dataset}, {depth} layer(s): IWAE k=50 beats VAE k=50 on test NLL "
                         f"(rule: mean paired gap > 0): gap {gap50.text()} nats → {_verdict(gap50.mean > 0)}")
            if tv and ti:
                lines.append(f"- {tag}, {dataset}, {depth} layer(s): IWAE k=50 has more active units than VAE k=50 "
                             f"(rule: mean total higher): {statistics.fmean(ti):.1f} vs {statistics.fmean(tv):.1f} "
                             f"→ {_verdict(statistics.fmean(ti) > statistics.fmean(tv))}")
        gaps = [(k, _gap(s.runs, dataset, depth, k)) for k in (1, 5, 50)]
        gaps = [(k, g) for k, g in gaps if g is not None]
        if len(gaps) >= 2:
            grows = all(b.mean > a.mean for (_, a), (_, b) in zip(gaps, gaps[1:]))
            lines.append(f"- {tag}, {dataset}, {depth} layer(s): the gap grows with k (rule: strictly increasing): "
                         + ", ".join(f"k={k}: {g.mean:+.2f}" for k, g in gaps) + f" → {_verdict(grows)}")
    return lines + _ess_claims(s.runs, tag)


def _depth_claims(s: Section, tag: str) -> list[str]:
    lines = []
    deep = [r for r in s.runs if r.depth >= 2 and r.active is not None]
    if deep:
        # layer 1 has 50 units, the others 100: compare the fraction of each layer's units that is active
        def falls(r: Run) -> bool:
            frac = [a / n for a, n in zip(r.active, r.latents)]
            return all(b <= a for a, b in zip(frac, frac[1:]))
        n = sum(falls(r) for r in deep)
        lines.append(f"- {tag}: active units fall with depth (rule: the active fraction of each layer ≤ the one "
                     f"below, in every run with ≥ 2 layers): {n} of {len(deep)} runs → {_verdict(n == len(deep))}")
    return lines + _ess_claims(s.runs, tag, by_depth=True)


def _ess_claims(runs: Sequence[Run], tag: str, by_depth: bool = False) -> list[str]:
    """ESS far below k, higher for the VAE than the IWAE at the same setting, (by_depth) falling with depth."""
    lines = []
    with_ess = [r for r in runs if final_ess(r) is not None and r.K > 1 and r.objective in ("vae", "iwae")]
    if not with_ess:
        return lines
    ratio = max(final_ess(r) / r.K for r in with_ess)
    lines.append(f"- {tag}: ESS far below k (rule: ESS < k/2 in every run with k > 1): largest ESS/k = {ratio:.2f} "
                 f"→ {_verdict(ratio < 0.5)}")

    def key(r: Run) -> tuple:
        return (r.dataset, r.depth, r.epochs, r.seed, r.K)

    iwae = {key(r): r for r in with_ess if r.objective == "iwae"}
    pairs = [(v, iwae[key(v)]) for v in with_ess if v.objective == "vae" and key(v) in iwae]
    if pairs:
        n = sum(final_ess(v) > final_ess(i) for v, i in pairs)
        lines.append(f"- {tag}: ESS higher for the VAE than the IWAE (rule: in every pair of equal k, depth, seed): "
                     f"{n} of {len(pairs)} pairs → {_verdict(n == len(pairs))}")
    for objective in ("vae", "iwae") if by_depth else ():
        pts = sorted((r.depth, final_ess(r)) for r in with_ess if r.objective == objective)
        if len(pts) >= 2 and pts[-1][0] > pts[0][0]:
            falls = pts[-1][1] < pts[0][1]
            lines.append(f"- {tag}: {objective.upper()} ESS falls with depth (rule: deepest < 1 layer): "
                         f"{pts[0][1]:.2f} at {pts[0][0]} → {pts[-1][1]:.2f} at {pts[-1][0]} layers → {_verdict(falls)}")
    return lines


def _rainforth_claims(s: Section, tag: str) -> list[str]:
    lines = []
    for dataset in sorted({r.dataset for r in s.runs}):
        base = [r for r in _rainforth_run(s, "iwae", 1, 64) if r.dataset == dataset]
        for label, objective in (("MIWAE(8,8)", "miwae"), ("PIWAE(8,8)", "piwae")):
            other = [r for r in _rainforth_run(s, objective, 8, 8) if r.dataset == dataset]
            for name, fn, metric in (("IWAE-64 bound", iwae64_bound, "iwae64_bound"), ("log p̂", log_p, "log_p"),
                                     ("encoder SNR", lambda r: r.metric("snr/encoder"), None)):
                a, b = _mean_attr(other, fn), _mean_attr(base, fn)
                if a is None or b is None:
                    continue
                if metric is None:
                    expect, why = True, "theory: encoder SNR O(sqrt(M/K))"
                else:
                    pa = lookup(metric, "mnist", objective=objective, M=8, K=8, layers=1)
                    pb = lookup(metric, "mnist", objective="iwae", M=1, K=64, layers=1)
                    expect, why = pa[0].value > pb[0].value, f"published {pa[0].value:.2f} vs {pb[0].value:.2f}"
                lines.append(f"- {tag}, {dataset}: {label} {'above' if expect else 'below'} IWAE(1,64) on {name} "
                             f"({why}): measured {a.mean:.3f} vs {b.mean:.3f} → {_verdict((a.mean > b.mean) == expect)}")
        snr = [(M, _mean_attr(grid_run(s, dataset, M, "reparam"), lambda r: r.metric("snr/encoder"))) for M in GRID_M]
        snr = [(M, v.mean) for M, v in snr if v is not None]
        if len(snr) >= 3:
            rises = all(b > a for (_, a), (_, b) in zip(snr, snr[1:]))
            lines.append(f"- {tag}, {dataset}: encoder SNR rises with M at M·K = 64 (rule: strictly increasing): "
                         + ", ".join(f"M={M}: {v:.3f}" for M, v in snr) + f" → {_verdict(rises)}")
    return lines


# ------------------------------------------------------------------------------------------ the page

def render(runs_dir: str | Path, out: Path, title: str, notes: str = "", page: str = "report.md") -> str:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise DataError(f"runs folder {str(runs_dir)!r} not found")
    found, manifests = find_runs(runs_dir), find_manifests(runs_dir)
    if not found and not manifests:
        raise DataError(f"no run directories (summary.json + config.yaml) under {str(runs_dir)!r}")
    # a summary without test/nll: a run still testing, killed, or fitted without test; it counts as missing
    runs = [r for r in found if r.metric("test/nll") is not None]
    unfinished = sorted(str(r.path.relative_to(runs_dir)) for r in found if r.metric("test/nll") is None)
    fig_name = f"{Path(page).stem}_figures"
    fig_dir = out / fig_name
    fig_dir.mkdir(parents=True, exist_ok=True)
    sections = build_sections(runs, manifests)
    lines = [f"# {title}", "", f"Generated by `python -m iwae_pl report {runs_dir} --out {out}` from {len(runs)} "
             f"finished run(s). Published numbers: `iwae_pl/report/published.yaml`. Cells read "
             "`measured · pub published · Δ measured − published`; `missing` marks a cell without a finished run "
             "(never filled in); `± sd (n=…)` is over seeds.", ""]
    if notes:
        lines += [notes.rstrip(), ""]
    if unfinished:
        lines += ["Left out, no test NLL yet (running, stopped, or fitted without `test`): "
                  + ", ".join(f"`{u}`" for u in unfinished), ""]
    lines += ["## Claims, measured", ""] + (claims(sections) or ["- nothing to check yet"]) + [""]
    for s in sections:
        lines += [f"## {STUDY_TITLES.get(s.study, s.study)} — `{s.variant or 'runs'}`", ""]
        lines += [f"Budget: {note}" for note in dict.fromkeys(s.notes)] + ([""] if s.notes else [])
        lines += [f"`{c}`" for c in dict.fromkeys(s.commands)] + ([""] if s.commands else [])
        lines += budget_lines(s) + [""]
        if s.study == "burda_table1":
            lines += burda_tables(s, fig_dir, fig_name)
        elif s.study == "burda_table2":
            lines += table2(s)
        elif s.study == "report_depth":
            lines += depth_tables(s, fig_dir, fig_name)
        elif s.study == "rainforth_mk64":
            lines += rainforth_tables(s, fig_dir, fig_name)
        else:
            lines += _md_table(["run", "objective", "M", "K", "layers", "dataset", "test NLL"],
                               [[r.name, r.objective, r.M, r.K, r.depth, r.dataset,
                                 number_cell(Stat.of([r.metric("test/nll")]))] for r in s.runs])
        if s.missing:
            lines += [f"Missing runs ({len(s.missing)} of {len(s.intended)} intended): "
                      + ", ".join(f"`{m}`" for m in s.missing), ""]
    lines += ["## Sources", ""] + [f"- `{k}`: {v}" for k, v in papers().items()] + [""]
    return "\n".join(lines)


def write_report(runs_dir: str | Path, out: str | Path, title: str = "Reproduction results", notes: str = "",
                 page: str = "report.md") -> Path:
    """Write ``<out>/<page>`` and its figures in ``<out>/<page stem>_figures/``; returns the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = render(runs_dir, out, title, notes, page)
    path = out / page
    path.write_text(text)
    return path
