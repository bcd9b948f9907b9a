"""A study declared in YAML, the M×K split helper and the per-trial config.

A study file (see ``sweeps/optuna_mk.yaml``)::

    study_name: mk64
    base_config: quickstart.yaml        # a run config (relative to this file) or an inline mapping
    overrides: {trainer.max_epochs: 3}  # fixed settings for every trial, by config path
    metric: val/bound
    direction: maximize
    sampler: {name: grid, seed: 0}      # grid | tpe | random
    pruner: {name: none}                # none | median | hyperband (+ that Optuna pruner's arguments)
    enqueue: [{model.lr: 0.003}]        # optional: settings tried first (Optuna's enqueue_trial)
    n_trials: 7
    search_space:
      split: {type: split, budget: 64}  # M in the divisors of 64, K = 64 / M
      model.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.objective: {type: categorical, choices: [miwae, piwae]}

Everything here is plain Python (no Optuna, no Lightning): the driver turns a ``ParamSpec`` into
``trial.suggest_*`` calls and the sampled values into a trial config with ``trial_config``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


from ..errors import ConfigError, check_choice, check_float, check_int
from ..runs.preflight import read_settings

SAMPLERS = ("grid", "tpe", "random")
PRUNERS = ("none", "median", "hyperband")
PARAM_TYPES = ("split", "float", "int", "categorical")
DIRECTIONS = ("maximize", "minimize")
SPLIT = "split"  # the name of the split parameter in the study (its value is M)


def splits(budget: int) -> list[tuple[int, int]]:
    """Every split (M, K) of a sample budget M·K = budget, M ascending.

    Example: ``splits(64)`` = [(1, 64), (2, 32), (4, 16), (8, 8), (16, 4), (32, 2), (64, 1)].
    """
    budget = check_int("split budget", budget)
    return [(m, budget // m) for m in range(1, budget + 1) if budget % m == 0]


def split_settings(objective: str, M: int, K: int) -> dict[str, Any]:
    """The model settings that spend M outer × K inner samples with ``objective``'s family.

    MIWAE(1, K) is IWAE(K), so an ``iwae`` trial with M > 1 becomes ``miwae`` (and ``miwae`` with
    M = 1 stays MIWAE(1, K) = IWAE(K)); PIWAE, CIWAE and VR take the split as it is. The ELBO does
    not depend on how its samples are grouped, so ``vae`` spends the budget as K = M·K, M = 1.
    """
    if objective == "iwae" and M > 1:
        return {"objective": "miwae", "M": M, "K": K}
    if objective == "vae":
        return {"objective": "vae", "M": 1, "K": M * K}
    return {"objective": objective, "M": M, "K": K}


@dataclass(frozen=True)
class ParamSpec:
    """One searched setting: ``path`` (a config path such as ``model.lr``, or ``split``) and its range.

    type: ``split`` (budget), ``float`` (low, high, log), ``int`` (low, high, log, step) or
    ``categorical`` (choices). ``grid``: the values the grid sampler visits (float/int only; a split
    visits its divisors, a categorical its choices).
    """

    path: str
    type: str
    budget: int | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: tuple = ()
    grid: tuple = ()

    def grid_values(self) -> list:
        """The values this parameter takes in a grid search (ConfigError if it has none)."""
        if self.type == "split":
            return [m for m, _ in splits(self.budget)]
        if self.type == "categorical":
            return list(self.choices)
        if not self.grid:
            raise ConfigError(f"search_space.{self.path}: the grid sampler needs 'grid: [values]' "
                              f"for a {self.type} parameter")
        return list(self.grid)


def _param(path: str, raw: Any) -> ParamSpec:
    where = f"search_space.{path}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with a 'type', got {raw!r}")
    kind = check_choice(f"{where}.type", raw.get("type"), PARAM_TYPES)
    allowed = {"split": {"type", "budget"}, "float": {"type", "low", "high", "log", "grid"},
               "int": {"type", "low", "high", "log", "step", "grid"},
               "categorical": {"type", "choices"}}[kind]
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} for type {kind}; allowed: {', '.join(sorted(allowed))}")
    if kind == "split":
        if path != SPLIT:
            raise ConfigError(f"{where}: a split parameter must be named {SPLIT!r}, got {path!r}")
        return ParamSpec(path, kind, budget=check_int(f"{where}.budget", raw.get("budget")))
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f"{where}.choices must be a non-empty list, got {choices!r}")
        return ParamSpec(path, kind, choices=tuple(choices))
    low, high = raw.get("low"), raw.get("high")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}.{name} must be a finite number, got {value!r}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: low and high of an int parameter must be integers, got {low!r}, {high!r}")
    if not low < high:
        raise ConfigError(f"{where}: low must be below high, got low={low!r}, high={high!r}")
    log = bool(raw.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-scale range needs low > 0, got low={low!r}")
    grid = tuple(raw.get("grid") or ())
    bad = [v for v in grid if not (low <= v <= high)]
    if bad:
        raise ConfigError(f"{where}.grid value {bad[0]!r} lies outside [{low}, {high}]")
    step = raw.get("step")
    if step is not None:
        step = check_int(f"{where}.step", step)
    return ParamSpec(path, kind, low=low, high=high, log=log, step=step, grid=grid)


@dataclass
class StudySpec:
    """A study: base config, metric, sampler, pruner, trial count, search space, storage, directory."""

    study_name: str
    base: dict
    metric: str
    direction: str
    sampler: dict
    pruner: dict
    n_trials: int
    space: list[ParamSpec]
    overrides: dict = field(default_factory=dict)
    storage: str | None = None
    sweep_dir: str = "sweeps_out"
    trial_args: list[str] = field(default_factory=list)
    trial_timeout: float | None = None
    heartbeat: dict = field(default_factory=lambda: {"interval": 10, "grace_period": 30, "max_retry": 2})
    enqueue: list[dict] = field(default_factory=list)

    @property
    def sampler_name(self) -> str:
        return self.sampler["name"]

    def grid(self) -> dict[str, list]:
        """Optuna GridSampler's search space: parameter name -> the values it visits."""
        return {p.path: p.grid_values() for p in self.space}


_TOP_KEYS = {"study_name", "base_config", "overrides", "metric", "direction", "sampler", "pruner", "n_trials",
             "search_space", "storage", "sweep_dir", "trial_args", "trial_timeout", "heartbeat", "enqueue"}


def _named(where: str, raw: Any, choices: tuple[str, ...], default: str) -> dict:
    """A ``{name: ..., <arguments>}`` block (a bare string is the name alone)."""
    raw = {"name": raw} if isinstance(raw, str) else dict(raw or {"name": default})
    raw.setdefault("name", default)
    check_choice(where, raw["name"], choices)
    return raw


def load_spec(path: str | Path) -> StudySpec:
    """Read and check a study file; ``base_config`` paths are relative to the study file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {str(path)!r} does not exist")
    return parse_spec(read_settings(path, f"study file {str(path)!r}"), path.parent)


def parse_spec(raw: Any, root: Path = Path(".")) -> StudySpec:
    """A ``StudySpec`` from a parsed study mapping (``root``: where a base_config path is looked up)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a study file must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown study key {unknown[0]!r}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    base = raw.get("base_config")
    if isinstance(base, str):
        base_path = (root / base)
        if not base_path.is_file():
            raise ConfigError(f"base_config {base!r} not found (looked in {str(base_path)!r})")
        base = read_settings(base_path, f"base_config {base!r}")
    if not isinstance(base, Mapping):
        raise ConfigError(f"base_config must be a path to a run config or a mapping, got {base!r}")
    space_raw = raw.get("search_space")
    if not isinstance(space_raw, Mapping) or not space_raw:
        raise ConfigError(f"search_space must be a non-empty mapping of config paths, got {space_raw!r}")
    space = [_param(str(name), value) for name, value in space_raw.items()]
    spec = StudySpec(
        study_name=str(raw.get("study_name") or "study"),
        base=copy.deepcopy(dict(base)),
        metric=str(raw.get("metric") or "val/bound"),
        direction=check_choice("direction", raw.get("direction", "maximize"), DIRECTIONS),
        sampler=_named("sampler", raw.get("sampler"), SAMPLERS, "tpe"),
        pruner=_named("pruner", raw.get("pruner"), PRUNERS, "none"),
        n_trials=check_int("n_trials", raw.get("n_trials", 10)),
        space=space,
        overrides=dict(raw.get("overrides") or {}),
        storage=raw.get("storage"),
        sweep_dir=str(raw.get("sweep_dir") or "sweeps_out"),
        trial_args=[str(a) for a in raw.get("trial_args") or []],
        trial_timeout=raw.get("trial_timeout"),
        enqueue=[dict(p) for p in raw.get("enqueue") or []],
    )
    names = {p.path for p in space}
    for params in spec.enqueue:
        extra = sorted(set(params) - names)
        if extra:
            raise ConfigError(f"enqueue: {extra[0]!r} is not in the search space; allowed: {', '.join(sorted(names))}")
    if raw.get("heartbeat"):
        spec.heartbeat.update(raw["heartbeat"])
    for key in ("interval", "grace_period"):
        check_int(f"heartbeat.{key}", spec.heartbeat[key])
    if spec.trial_timeout is not None:
        check_float("trial_timeout", spec.trial_timeout, 0.0, low_open=True)
    if spec.sampler_name == "grid":
        spec.grid()  # every parameter must have grid values
    return spec


def _child(node: dict | list, key: str, path: str) -> tuple[dict | list, str | int]:
    """(container, key) for one step of a config path; a list (e.g. ``trainer.callbacks``) takes an index."""
    if isinstance(node, list):
        if not key.isdigit() or int(key) >= len(node):
            raise ConfigError(f"config path {path!r}: {key!r} is not an index of a list of {len(node)}")
        return node, int(key)
    return node, key


def set_path(config: dict, path: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``path`` "a.b.c", creating mappings on the way; a list step
    takes an index (``trainer.callbacks.0.init_args.epochs``)."""
    node: Any = config
    keys = path.split(".")
    for key in keys[:-1]:
        node, k = _child(node, key, path)
        child = node[k] if isinstance(node, list) else node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"config path {path!r}: {key!r} holds {child!r}, not a mapping")
        node = child
    node, k = _child(node, keys[-1], path)
    node[k] = value


def trial_settings(params: Mapping[str, Any], spec: StudySpec) -> dict[str, Any]:
    """Sampled parameters -> config path -> value; the split becomes model.objective/M/K."""
    settings = {path: value for path, value in params.items() if path != SPLIT}
    if SPLIT in params:
        budget = next(p.budget for p in spec.space if p.type == "split")
        M = int(params[SPLIT])
        objective = settings.get("model.objective", spec.overrides.get("model.objective",
                                                                       spec.base.get("model", {}).get("objective", "iwae")))
        for key, value in split_settings(objective, M, budget // M).items():
            settings[f"model.{key}"] = value
    return settings


def trial_config(spec: StudySpec, settings: Mapping[str, Any], run_root: str, version: str,
                 callbacks: list[dict] = ()) -> dict:
    """The base config with the fixed overrides, the trial's settings and a logger writing the run
    into ``<run_root>/<version>/`` (CSV/TensorBoard loggers; other loggers get ``save_dir`` = that folder)."""
    config = copy.deepcopy(spec.base)
    for path, value in {**spec.overrides, **settings}.items():
        set_path(config, path, value)
    trainer = config.setdefault("trainer", {})
    logger = trainer.get("logger")
    if logger in (None, True):
        logger = {"class_path": "pytorch_lightning.loggers.CSVLogger"}
    if not isinstance(logger, dict) or "class_path" not in logger:
        raise ConfigError(f"trainer.logger of a sweep's base config must be one logger with a class_path, got {logger!r}")
    args = logger.setdefault("init_args", {})
    if logger["class_path"].rsplit(".", 1)[-1] in ("CSVLogger", "TensorBoardLogger"):
        args.update(save_dir=str(Path(run_root).parent), name=Path(run_root).name, version=version)
    else:
        args["save_dir"] = str(Path(run_root) / version)
    trainer["logger"] = logger
    if callbacks:
        trainer["callbacks"] = list(trainer.get("callbacks") or []) + list(callbacks)
    return config
