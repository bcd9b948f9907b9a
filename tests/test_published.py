"""The published-numbers file: it parses, every number names its source, lookups find the right one."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from iwae_pl.errors import DataError
from iwae_pl.report.published import METRICS, REQUIRED, load_published, lookup, parse_published, published_path

ROOT = Path(__file__).resolve().parents[1]


def test_file_ships_in_the_package_and_parses():
    path = published_path()
    assert path.name == "published.yaml" and path.parent.name == "report" and path.exists()
    values, claims = load_published()
    assert len(values) > 50 and len(claims) >= 5
    # package-data, so that an installed (non-editable) package has the file
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"iwae_pl.report" = ["published.yaml"]' in pyproject


def test_every_number_names_its_source():
    raw = yaml.safe_load(published_path().read_text())
    for entry in raw["values"]:
        assert all(entry.get(k) not in (None, "", {}) for k in REQUIRED), entry
        assert entry["paper"] in raw["papers"] and raw["papers"][entry["paper"]]["cite"].strip()
        assert entry["metric"] in METRICS
    for p in load_published()[0]:
        assert p.where and p.dataset and p.setting and p.cite
        assert p.paper in p.source and p.where in p.source


def test_counts_per_source():
    values = load_published()[0]

    def count(paper, where, metric):
        return sum(p.paper == paper and p.where == where and p.metric == metric for p in values)

    # Burda Table 1: 2 datasets x 2 depths x 2 objectives x 3 k, NLL and active units
    assert count("burda2015", "Table 1", "test_nll") == 24
    assert count("burda2015", "Table 1", "active_units") == 24
    assert count("burda2015", "Appendix (fixed-binarization MNIST)", "test_nll") == 12
    assert sum(p.paper == "rainforth2018" for p in values) == 15
    assert sum(p.paper == "report2017" for p in values) == 12


def test_lookup_finds_the_cell():
    (p,) = lookup("test_nll", "mnist", objective="iwae", K=50, layers=2)
    assert p.value == 82.90 and p.where == "Table 1"
    units = lookup("active_units", "mnist", objective="iwae", K=50, layers=2)
    assert {(u.paper, u.value) for u in units} == {("burda2015", (26, 7)), ("report2017", (26, 6))}
    (fixed,) = lookup("test_nll", "binarized_mnist", objective="vae", K=50, layers=1)
    assert fixed.value == 89.05
    assert lookup("test_nll", "binarized_mnist", objective="iwae", K=64, layers=1) == []
    # M defaults to 1: MIWAE(8, 8) is not IWAE(1, 64)
    (bound,) = lookup("iwae64_bound", "mnist", objective="miwae", M=8, K=8, layers=1)
    assert bound.value == -85.69
    assert lookup("iwae64_bound", "mnist", objective="miwae", M=1, K=8, layers=1) == []


def test_rainforth_kl_is_bound_minus_log_p():
    values = load_published()[0]
    for objective, M, K in (("iwae", 1, 64), ("piwae", 8, 8), ("miwae", 8, 8), ("ciwae", 1, 64), ("vae", 1, 64)):
        get = {p.metric: p.value for p in values
               if p.paper == "rainforth2018" and p.setting["objective"] == objective}
        assert math.isclose(get["iwae64_bound"] - get["log_p"], get["neg_kl"], abs_tol=0.011), objective


@pytest.mark.parametrize("mutate, needle", [
    (lambda e: e.pop("where"), "lacks where"),
    (lambda e: e.update(paper="nobody"), "names paper 'nobody'"),
    (lambda e: e.update(metric="elbo"), "metric 'elbo'"),
    (lambda e: e.update(metric="active_units"), "active_units is a list"),
    (lambda e: e.update(value="86.7"), "value '86.7'"),
    (lambda e: e.update(setting={}), "setting must be a non-empty mapping"),
])
def test_a_bad_entry_is_named(mutate, needle):
    entry = {"paper": "p", "where": "Table 1", "dataset": "mnist", "setting": {"K": 1}, "metric": "test_nll",
             "value": 86.76}
    mutate(entry)
    text = yaml.safe_dump({"papers": {"p": {"cite": "A paper"}}, "values": [entry]})
    with pytest.raises(DataError, match="values\\[0\\]") as err:
        parse_published(text)
    assert needle in str(err.value)


def test_a_paper_without_citation_is_refused():
    text = yaml.safe_dump({"papers": {"p": {}}, "values": []})
    with pytest.raises(DataError, match="paper 'p' needs a `cite`"):
        parse_published(text)
