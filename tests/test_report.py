"""The report on a folder of generated run directories: right numbers in the right cells, missing runs
marked, claims checked, figures written."""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from iwae_pl.cli import main
from iwae_pl.errors import DataError
from iwae_pl.report.collect import find_runs
from iwae_pl.report.experiments import MANIFEST, RUN_INFO
from iwae_pl.report.report import Stat, number_cell, units_text, write_report
from iwae_pl.runs.result import RunResult

BURDA1 = [{"latent": 50, "hidden": [200, 200]}]


def make_run(root: Path, name: str, *, objective: str, K: int, M: int = 1, layers=BURDA1, dataset="binarized_mnist",
             seed: int = 0, nll: float | None, active=None, ess=None, extra=None, info: dict | None = None,
             snr=None, epochs: int = 15, test_k: int = 100, beta=None) -> Path:
    """A finished run directory as the CLI leaves it (config.yaml, summary.json, metrics.csv)."""
    d = root / name
    d.mkdir(parents=True)
    model = {"objective": objective, "M": M, "K": K, "layers": layers, "test_k": test_k, "estimator": "reparam",
             "beta": beta}
    config = {"seed_everything": seed, "model": model, "data": {"dataset": dataset, "batch_size": 20, "seed": seed},
              "trainer": {"max_epochs": epochs, "limit_train_batches": 100.0}}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {} if nll is None else {"test/nll": nll, "test/bound": -nll - 2.0}
    for i, a in enumerate(active or [], 1):
        metrics[f"active/layer{i}"] = a
    ess_curve = ess or []
    if ess_curve:
        metrics["ess/group"] = ess_curve[-1]
    if snr:
        metrics["snr/encoder"], metrics["snr/decoder"] = snr
    RunResult(run_dir=str(d), metrics=metrics).save()
    rows = ["epoch,step,ess/group,ess/above_threshold,test/nll"]
    rows += [f"{e},{100 * (e + 1) - 1},{v},{v + 1}," for e, v in enumerate(ess_curve)]
    if nll is not None:
        rows.append(f"{epochs},{100 * epochs},,,{nll}")
    (d / "metrics.csv").write_text("\n".join(rows) + "\n")
    for k, value in (extra or {}).items():
        sub = d / f"test_k{k}"
        sub.mkdir()
        (sub / "config.yaml").write_text(yaml.safe_dump(config))
        RunResult(run_dir=str(sub), metrics={"test/nll": value}, subcommand="test").save()
    if info is not None:
        (d / RUN_INFO).write_text(json.dumps({"name": name, **info}))
    return d


def table_row(page: str, heading: str, label: str) -> list[str]:
    """The cells of the row starting with ``label`` in the first table after ``heading``."""
    block = page[page.index(heading):]
    for line in block.splitlines():
        if line.startswith(f"| {label} |"):
            return [c.strip() for c in line.strip().strip("|").split("|")][1:]
    raise AssertionError(f"no row {label!r} after {heading!r}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("report")
    root = tmp_path / "runs" / "burda_table1_short"
    info = {"experiment": "burda_table1", "variant": "short", "study": "burda_table1"}
    make_run(root, "vae_k50_s0", objective="vae", K=50, nll=100.0, active=[20], ess=[9.0, 8.0], info=info)
    make_run(root, "vae_k50_s1", objective="vae", K=50, seed=1, nll=102.0, active=[22], ess=[9.0, 10.0], info=info)
    make_run(root, "iwae_k50_s0", objective="iwae", K=50, nll=97.0, active=[25], ess=[3.0, 2.0], info=info)
    make_run(root, "iwae_k50_s1", objective="iwae", K=50, seed=1, nll=98.0, active=[27], ess=[3.0, 4.0], info=info)
    make_run(root, "iwae_k5_s0", objective="iwae", K=5, nll=99.5, active=[23], info=info)
    make_run(root, "vae_k5_s0", objective="vae", K=5, nll=None, active=[21], info=info)  # fitted, never tested
    make_run(root, "vae_k1_s0", objective="vae", K=1, nll=101.0, active=[19], info=info)
    make_run(root, "iwae_k1_s0", objective="iwae", K=1, nll=101.0, active=[19], info=info)
    manifest = {"experiment": "burda_table1", "study": "burda_table1", "variant": "short", "note": "tiny budget",
                "definition": "sweeps/experiments/burda_table1.yaml",
                "runs": [{"name": n, "objective": o, "M": 1, "K": k, "layers": 1, "dataset": "binarized_mnist"}
                         for n, o, k in (("vae_k50_s0", "vae", 50), ("vae_k50_s1", "vae", 50),
                                         ("iwae_k50_s0", "iwae", 50), ("iwae_k50_s1", "iwae", 50),
                                         ("iwae_k5_s0", "iwae", 5), ("vae_k5_s0", "vae", 5),
                                         ("vae_k1_s0", "vae", 1), ("iwae_k1_s0", "iwae", 1))]}
    (root / MANIFEST).write_text(json.dumps(manifest))
    # Rainforth, no run_info: the study is inferred from M*K = 64 on the 1-layer net
    rf = tmp_path / "runs" / "rf"
    make_run(rf, "iwae64", objective="iwae", K=64, nll=95.0, extra={64: 96.5}, snr=(0.2, 5.0), test_k=200)
    make_run(rf, "miwae88", objective="miwae", M=8, K=8, nll=95.4, extra={64: 96.0}, snr=(0.6, 4.0), test_k=200)
    make_run(rf, "miwae2_32", objective="miwae", M=2, K=32, nll=95.2, extra={64: 96.2}, snr=(0.4, 4.5), test_k=200)
    # depth study (inferred: hidden 100-100, h1 = 50)
    dp = tmp_path / "runs" / "depth"
    for d in (1, 3):
        layers = [{"latent": 50, "hidden": [100, 100]}] + [{"latent": 100, "hidden": [100, 100]}] * (d - 1)
        make_run(dp, f"vae_d{d}", objective="vae", K=50, layers=layers, nll=110.0 + d, epochs=5,
                 active=[30] + [5] * (d - 1), ess=[6.0, 5.0 - d / 2])
        make_run(dp, f"iwae_d{d}", objective="iwae", K=50, layers=layers, nll=108.0 + d, epochs=5,
                 active=[35] + [50] * (d - 1), ess=[3.0, 2.0])
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def page_path(runs) -> Path:
    """The report written once for the module (figures take a while on a loaded CPU)."""
    return write_report(runs, runs.parent / "out")


@pytest.fixture(scope="module")
def page(page_path) -> str:
    return page_path.read_text()


def test_collect_reads_every_run(runs):
    found = {r.name: r for r in find_runs(runs)}
    assert len(found) == 8 + 3 + 4  # test_k64 folders belong to their run
    assert found["iwae64"].study == "rainforth_mk64" and found["iwae64"].extra_nll == {64: 96.5}
    assert found["vae_d3"].study == "report_depth" and found["vae_d3"].active == (30, 5, 5)
    assert found["vae_k50_s0"].train_points == 2000 and found["vae_k50_s0"].curves["ess/group"] == [(0, 9.0), (1, 8.0)]


def test_burda_cells_hold_the_right_numbers(page):
    heading = "**Test NLL**"
    cells = table_row(page, heading, "binarized_mnist, 1")
    # columns: VAE k=1, 5, 50, IWAE k=1, 5, 50; published (Burda appendix) 88.71 88.83 89.05 88.71 87.63 87.10
    assert cells[0] == "101.00 · pub 88.71 · Δ +12.29"
    assert cells[1] == "missing · pub 88.83"  # vae_k5_s0 intended, never finished
    assert cells[2] == "101.00 ± 1.41 (n=2) · pub 89.05 · Δ +11.95"
    assert cells[4] == "99.50 · pub 87.63 · Δ +11.87"
    assert cells[5] == "97.50 ± 0.71 (n=2) · pub 87.10 · Δ +10.40"
    gap = table_row(page, "**Gap**", "binarized_mnist, 1")
    assert gap == ["0.00 · pub +0.00", "missing · pub +1.20", "3.50 ± 0.71 (n=2) · pub +1.95"]
    units = table_row(page, "**Active units**", "binarized_mnist, 1")
    assert units[2] == "20 / 22" and units[5] == "25 / 27" and units[1] == "missing"
    ess = table_row(page, "**ESS**", "binarized_mnist, 1")
    assert ess[2] == "9.00 ± 1.41 (n=2)" and ess[5] == "3.00 ± 1.41 (n=2)"
    assert "Missing runs (1 of 8 intended): `vae_k5_s0`" in page
    assert "Left out, no test NLL yet (running, stopped, or fitted without `test`): `burda_table1_short/vae_k5_s0`" in page
    assert "Budget: tiny budget" in page


def test_rainforth_cells_and_grid(page):
    row = table_row(page, "**M·K = 64 on `binarized_mnist`**", "IWAE (1, 64)")
    # bound = -L_64 nll, log p = -test/nll, -KL = difference; published on mnist: no Δ on another dataset
    assert row[0] == "-96.50 · pub -86.11" and row[1] == "-95.00 · pub -84.52" and row[2] == "-1.50 · pub -1.59"
    assert row[3] == "0.200" and row[4] == "5.000"
    assert table_row(page, "**M·K = 64 on `binarized_mnist`**", "MIWAE (8, 8)")[:3] == [
        "-96.00 · pub -85.69", "-95.40 · pub -84.97", "-0.60 · pub -0.72"]
    assert table_row(page, "**M·K = 64 on `binarized_mnist`**", "PIWAE (8, 8)")[0] == "missing · pub -85.74"
    grid = table_row(page, "**The M × K = 64 grid**", "M=2, K=32")
    assert grid == ["-96.20", "-95.20", "0.400", "4.500"]
    assert table_row(page, "**The M × K = 64 grid**", "M=64, K=1") == ["missing"] * 4


def test_depth_tables_and_claims(page):
    row = table_row(page, "**5 epoch(s)**", "3")
    assert row == ["113.00", "30+5+5", "3.50", "111.00", "35+50+50", "2.00"]
    claims = page[page.index("## Claims, measured"):page.index("## Burda")]
    # active fraction per layer: VAE 30/50 = 0.6 then 5/100 (falls); IWAE 35/50 = 0.7 then 50/100 (falls)
    assert "active units fall with depth" in claims and "2 of 2 runs → **held**" in claims
    assert "ESS higher for the VAE than the IWAE (rule: in every pair of equal k, depth, seed): 2 of 2 pairs → **held**" in claims
    assert "burda_table1/short: ESS far below k (rule: ESS < k/2 in every run with k > 1): largest ESS/k = 0.20" in claims
    assert "VAE ESS falls with depth (rule: deepest < 1 layer): 4.50 at 1 → 3.50 at 3 layers → **held**" in claims
    assert "largest ESS/k = 0.09 → **held**" in claims
    assert re.search(r"IWAE k=50 beats VAE k=50 on test NLL .*gap 3\.50 ± 0\.71 \(n=2\) nats → \*\*held\*\*", claims)
    assert "IWAE k=50 has more active units than VAE k=50 (rule: mean total higher): 26.0 vs 21.0 → **held**" in claims
    assert "the gap grows with k (rule: strictly increasing): k=1: +0.00, k=50: +3.50 → **held**" in claims
    # MIWAE(8,8): bound -96.0 above IWAE's -96.5 as published (held); log p -95.4 below -95.0, published above (not)
    assert "MIWAE(8,8) above IWAE(1,64) on IWAE-64 bound (published -85.69 vs -86.11): measured -96.000 vs -96.500 → **held**" in claims
    assert "MIWAE(8,8) below IWAE(1,64) on log p̂ (published -84.97 vs -84.52): measured -95.400 vs -95.000 → **held**" in claims
    assert "MIWAE(8,8) above IWAE(1,64) on encoder SNR" in claims and "0.600 vs 0.200 → **held**" in claims
    assert "encoder SNR rises with M" in claims and "M=1: 0.200, M=2: 0.400, M=8: 0.600 → **held**" in claims


def test_figures_are_written_and_wide(page_path, page):
    path = page_path
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert len(pngs) >= 5
    for rel in pngs:
        image = matplotlib.image.imread(path.parent / rel)
        assert image.shape[1] >= 800, rel
    names = " ".join(pngs)
    for expected in ("nll_vs_k", "active_units", "depth", "ess_over_epochs", "mk_grid"):
        assert expected in names


def test_empty_folder_is_one_line_data_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no run directories"):
        write_report(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(SystemExit) as err:
        main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert err.value.code == 1
    assert capsys.readouterr().err.strip() == f"iwae_pl: data error: runs folder '{tmp_path / 'nowhere'}' not found"


def test_cli_writes_the_page_with_notes(tmp_path, capsys):
    make_run(tmp_path / "runs", "vr_run", objective="vr", K=5, nll=30.0)  # a run of no study: listed as other
    notes = tmp_path / "notes.md"
    notes.write_text("Measured on a test machine.\n")
    main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "docs"), "--page", "results.md",
          "--notes", str(notes)])
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "Measured on a test machine." in page and (tmp_path / "docs" / "results_figures").is_dir()
    assert "| vr_run | vr | 1 | 5 | 1 | binarized_mnist | 30.00 |" in page
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'docs' / 'results.md'}"


def test_cell_formatting():
    assert number_cell(None) == "missing"
    assert number_cell(Stat.of([1.0, 3.0])) == "2.00 ± 1.41 (n=2)"
    assert units_text((26, 7)) == "26+7" and units_text(None) == "missing"
    assert Stat.of([None, float("nan")]) is None
