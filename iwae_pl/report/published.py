"""The published numbers the project quotes, as data (``published.yaml`` in this package).

Every value names its source: the paper, where in it (table / figure / section), the dataset and the
setting (objective, M, K, layers). The report looks values up by dataset, metric and setting::

    from iwae_pl.report.published import lookup
    lookup("test_nll", "mnist", objective="iwae", K=50, layers=2)   # -> [Published(... value=82.9)]
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import DataError

METRICS = ("test_nll", "active_units", "iwae64_bound", "log_p", "neg_kl", "prune_nll_change_max")
REQUIRED = ("paper", "where", "dataset", "setting", "metric", "value")
# A setting key missing from a published entry matches these defaults (the papers' M = 1, beta unused).
SETTING_DEFAULTS = {"M": 1, "beta": None}


@dataclass(frozen=True)
class Published:
    """One published number and its source.

    Attributes:
        paper: key of the paper (``burda2015``, ``report2017``, ``rainforth2018``); cite: its citation.
        where: table / figure / section. dataset: the data it was measured on.
        setting: what was trained, e.g. ``{"objective": "iwae", "K": 50, "layers": 2}``.
        metric: one of ``METRICS``. value: a number, or a list per layer for ``active_units``.
    """

    paper: str
    cite: str
    where: str
    dataset: str
    setting: dict[str, Any]
    metric: str
    value: float | tuple[int, ...]

    @property
    def source(self) -> str:
        """Short source line, e.g. ``burda2015 Table 1, mnist``."""
        return f"{self.paper} {self.where}, {self.dataset}"

    def matches(self, dataset: str, **setting: Any) -> bool:
        """True if this entry was measured on ``dataset`` in ``setting`` (keys it does not name must
        equal ``SETTING_DEFAULTS``; ``any`` in the entry matches everything)."""
        if self.dataset != dataset:
            return False
        for key, want in setting.items():
            have = self.setting.get(key, SETTING_DEFAULTS.get(key, "any"))
            if have != "any" and have != want:
                return False
        return True


def _check_entry(i: int, entry: Any, papers: dict[str, Any], path: str) -> None:
    where = f"{path}: values[{i}]"
    if not isinstance(entry, dict):
        raise DataError(f"{where} must be a mapping, got {entry!r}")
    missing = [k for k in REQUIRED if k not in entry]
    if missing:
        raise DataError(f"{where} lacks {', '.join(missing)}; every value needs {', '.join(REQUIRED)}")
    if entry["paper"] not in papers:
        raise DataError(f"{where} names paper {entry['paper']!r}; known papers: {', '.join(papers)}")
    if entry["metric"] not in METRICS:
        raise DataError(f"{where} has metric {entry['metric']!r}; allowed: {', '.join(METRICS)}")
    if not isinstance(entry["setting"], dict) or not entry["setting"]:
        raise DataError(f"{where} setting must be a non-empty mapping, got {entry['setting']!r}")
    value = entry["value"]
    ok = (all(isinstance(v, int) for v in value) and len(value) > 0) if isinstance(value, list) \
        else isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or (entry["metric"] == "active_units") != isinstance(value, list):
        raise DataError(f"{where} value {value!r}: active_units is a list of counts per layer, "
                        "every other metric one number")
    for key in ("where", "dataset"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise DataError(f"{where} {key} must be a non-empty string, got {entry[key]!r}")


def parse_published(text: str, path: str = "published.yaml") -> tuple[list[Published], list[dict[str, str]]]:
    """Parse and check the file's text: (values, claims). Raises DataError naming a bad entry."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DataError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict) or not isinstance(data.get("papers"), dict) \
            or not isinstance(data.get("values"), list):
        raise DataError(f"{path} must hold a mapping `papers` and a list `values`")
    papers = data["papers"]
    for key, paper in papers.items():
        if not isinstance(paper, dict) or not str(paper.get("cite", "")).strip():
            raise DataError(f"{path}: paper {key!r} needs a `cite`")
    values = []
    for i, entry in enumerate(data["values"]):
        _check_entry(i, entry, papers, path)
        value = entry["value"]
        values.append(Published(paper=entry["paper"], cite=papers[entry["paper"]]["cite"], where=entry["where"],
                                dataset=entry["dataset"], setting=dict(entry["setting"]), metric=entry["metric"],
                                value=tuple(value) if isinstance(value, list) else float(value)))
    claims = data.get("claims", []) or []
    for i, claim in enumerate(claims):
        if not isinstance(claim, dict) or claim.get("paper") not in papers or not claim.get("where") \
                or not claim.get("text"):
            raise DataError(f"{path}: claims[{i}] needs paper (a known one), where and text, got {claim!r}")
    return values, claims


def published_path() -> Path:
    """Where the installed ``published.yaml`` lies."""
    return Path(str(resources.files("iwae_pl.report").joinpath("published.yaml")))


@lru_cache(maxsize=1)
def load_published() -> tuple[tuple[Published, ...], tuple[dict[str, str], ...]]:
    """The package's published values and claims (parsed once)."""
    path = published_path()
    values, claims = parse_published(path.read_text(), str(path))
    return tuple(values), tuple(claims)


def lookup(metric: str, dataset: str, **setting: Any) -> list[Published]:
    """Published values of ``metric`` on ``dataset`` for ``setting`` (all papers that report one)."""
    return [p for p in load_published()[0] if p.metric == metric and p.matches(dataset, **setting)]


def papers() -> dict[str, str]:
    """Paper key -> citation, for the results page's source list."""
    return {p.paper: p.cite for p in load_published()[0]}
