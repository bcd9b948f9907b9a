"""Experiment definitions: one YAML file (``sweeps/experiments/*.yaml``) -> the list of runs it intends.

A definition holds a base config (the LightningCLI config every run starts from), named
architectures, groups of runs (a product of axes and/or an explicit list) and budget variants::

    experiment: burda_table1
    study: burda_table1                      # the report table that shows these runs
    base: {seed_everything: 0, model: {...}, data: {...}, trainer: {...}}
    architectures: {burda1: [{latent: 50, hidden: [200, 200]}]}
    groups:
      - name: "{objective}_k{K}_{arch}_{dataset}_s{seed}"
        axes: {objective: [vae, iwae], K: [1, 5, 50], arch: [burda1], dataset: [mnist], seed: [0]}
        runs: [{objective: iwae, K: 64}]     # optional explicit runs (merged with `fixed`)
        fixed: {M: 1}                        # attributes every run of the group gets
        variants: [full]                     # only in these variants (default: all)
        config: {...}                        # deep-merged over base + variant for this group
        variant_config: {short: {...}}       # then this, for one variant only
        extra_test_k: [64]                   # after fit, `test` again with these test_k
        from: "vae_k50_{arch}_{dataset}_s{seed}"   # continue from that run's last checkpoint
    variants:
      short: {note: "...", config: {...}}    # deep-merged over base
      full: {note: "...", config: {...}}

Run attributes (axes) map onto settings: objective, M, K, beta, estimator -> ``model.*``; arch ->
``model.layers``; dataset -> ``data.dataset``; seed -> ``seed_everything`` and ``data.seed``;
epochs -> ``trainer.max_epochs``. Every run tests after fit (``test_after_fit: true``).
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..errors import ConfigError, DataError
from ..runs.result import SUMMARY, RunResult, test_pass_dir

ATTRIBUTES = ("objective", "M", "K", "beta", "estimator", "arch", "dataset", "seed", "epochs")
_MODEL_KEYS = ("objective", "M", "K", "beta", "estimator")
RUN_INFO = "run_info.json"
MANIFEST = "experiment.json"
TOP_KEYS = ("experiment", "title", "study", "description", "base", "architectures", "groups", "variants")
GROUP_KEYS = ("name", "axes", "runs", "fixed", "variants", "config", "variant_config", "extra_test_k", "from")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``override`` merged in (mappings recursively, everything else replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class RunSpec:
    """One intended run of an experiment.

    Attributes:
        name: unique within the experiment (its run directory's name).
        experiment, variant, group, study: where it comes from and which report table shows it.
        attrs: its axis values, e.g. ``{"objective": "iwae", "K": 50, "arch": "burda2", "seed": 0}``.
        config: the full LightningCLI config of the run (before the runner adds the logger).
        parent: name of the run whose last checkpoint this one continues from ('' if none).
        extra_test_k: further ``test`` passes after fit, one per test_k (e.g. 64 for the IWAE-64 bound).
    """

    name: str
    experiment: str
    variant: str
    group: str
    study: str
    attrs: dict[str, Any]
    config: dict[str, Any]
    parent: str = ""
    extra_test_k: tuple[int, ...] = ()

    @property
    def objective(self) -> str:
        return self.config["model"]["objective"]

    @property
    def M(self) -> int:
        return int(self.config["model"].get("M", 1))

    @property
    def K(self) -> int:
        return int(self.config["model"].get("K", 1))

    @property
    def layers(self) -> int:
        """Number of stochastic layers."""
        return len(self.config["model"]["layers"])

    @property
    def dataset(self) -> str:
        return self.config["data"]["dataset"]

    @property
    def budget(self) -> dict[str, Any]:
        """Epochs, training batches per epoch (None = all), batch size and test samples per point."""
        trainer, model, data = self.config.get("trainer", {}), self.config["model"], self.config["data"]
        return {"max_epochs": trainer.get("max_epochs"), "limit_train_batches": trainer.get("limit_train_batches"),
                "batch_size": data.get("batch_size"), "test_k": model.get("test_k"),
                "limit_test_batches": trainer.get("limit_test_batches")}


@dataclass
class Experiment:
    """A parsed experiment definition (see the module docstring)."""

    name: str
    study: str
    title: str
    description: str
    base: dict[str, Any]
    architectures: dict[str, list[dict[str, Any]]]
    groups: list[dict[str, Any]]
    variants: dict[str, dict[str, Any]]
    path: str = ""

    def variant_note(self, variant: str) -> str:
        return str(self.variants.get(variant, {}).get("note", ""))

    def expand(self, variant: str) -> list[RunSpec]:
        """The runs of ``variant``, in definition order (a run named twice is an error)."""
        if variant not in self.variants:
            raise ConfigError(f"experiment {self.name!r} has no variant {variant!r}; "
                              f"allowed: {', '.join(self.variants)}")
        config = deep_merge(self.base, self.variants[variant].get("config", {}) or {})
        runs: list[RunSpec] = []
        seen: set[str] = set()
        for gi, group in enumerate(self.groups):
            if variant not in group.get("variants", list(self.variants)):
                continue
            group_config = deep_merge(config, group.get("config", {}) or {})
            group_config = deep_merge(group_config, (group.get("variant_config", {}) or {}).get(variant, {}) or {})
            for attrs in _group_attrs(group, f"{self.path}: groups[{gi}]"):
                spec = self._spec(variant, group, gi, attrs, group_config)
                if spec.name in seen:
                    raise ConfigError(f"{self.path}: run name {spec.name!r} appears twice in variant {variant!r}; "
                                      "make the group's name template tell the runs apart")
                seen.add(spec.name)
                runs.append(spec)
        names = {r.name for r in runs}
        for r in runs:
            if r.parent and r.parent not in names:
                raise ConfigError(f"{self.path}: run {r.name!r} continues from {r.parent!r}, "
                                  f"which variant {variant!r} does not define")
        return runs

    def _spec(self, variant: str, group: dict[str, Any], gi: int, attrs: dict[str, Any],
              config: dict[str, Any]) -> RunSpec:
        where = f"{self.path}: groups[{gi}]"
        config = copy.deepcopy(config)
        model, data = config.setdefault("model", {}), config.setdefault("data", {})
        for key, value in attrs.items():
            if key in _MODEL_KEYS:
                model[key] = value
            elif key == "arch":
                if value not in self.architectures:
                    raise ConfigError(f"{where}: unknown arch {value!r}; defined: {', '.join(self.architectures)}")
                model["layers"] = copy.deepcopy(self.architectures[value])
            elif key == "dataset":
                data["dataset"] = value
            elif key == "seed":
                config["seed_everything"] = value
                data["seed"] = value
            elif key == "epochs":
                config.setdefault("trainer", {})["max_epochs"] = value
        config["test_after_fit"] = True
        for key in ("objective", "layers"):
            if key not in model:
                raise ConfigError(f"{where}: no model.{key} (set it in base, the group's config or an axis)")
        if "dataset" not in data:
            raise ConfigError(f"{where}: no data.dataset (set it in base or as an axis)")
        template = group.get("name") or "_".join(f"{k}{{{k}}}" for k in attrs)
        values = {**attrs, "variant": variant}
        try:
            name = template.format(**values)
            parent = group["from"].format(**values) if group.get("from") else ""
        except (KeyError, IndexError) as err:
            raise ConfigError(f"{where}: name template {template!r} uses {err}, which is not an axis of the group; "
                              f"axes: {', '.join(attrs)}") from err
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{where}: bad run name {name!r} (non-empty, no '/', not starting with '.')")
        extra = tuple(int(k) for k in group.get("extra_test_k", []) or [])
        return RunSpec(name=name, experiment=self.name, variant=variant, group=str(group.get("name", gi)),
                       study=self.study, attrs=dict(attrs), config=config, parent=parent, extra_test_k=extra)


def _group_attrs(group: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The attribute dicts of a group: the product of its axes, then its explicit runs; `fixed` in each."""
    axes = group.get("axes", {}) or {}
    fixed = group.get("fixed", {}) or {}
    explicit = group.get("runs", []) or []
    for key in [*axes, *fixed, *(k for run in explicit for k in run)]:
        if key not in ATTRIBUTES:
            raise ConfigError(f"{where}: unknown run attribute {key!r}; allowed: {', '.join(ATTRIBUTES)}")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: axis {key!r} must be a non-empty list, got {values!r}")
    out = []
    if axes:
        keys = list(axes)
        out += [{**fixed, **dict(zip(keys, combo))} for combo in itertools.product(*(axes[k] for k in keys))]
    out += [{**fixed, **run} for run in explicit]
    if not out:
        raise ConfigError(f"{where}: a group needs `axes` or `runs`")
    return out


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Parse an experiment YAML file; ConfigError names the bad key, DataError a missing file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise DataError(f"experiment file {str(path)!r} not found") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = set(data) - set(TOP_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(TOP_KEYS)}")
    for key in ("experiment", "groups", "variants"):
        if not data.get(key):
            raise ConfigError(f"{path}: `{key}` is required")
    for gi, group in enumerate(data["groups"]):
        bad = set(group) - set(GROUP_KEYS) if isinstance(group, dict) else {"(not a mapping)"}
        if bad:
            raise ConfigError(f"{path}: groups[{gi}] has unknown key(s) {', '.join(sorted(bad))}; "
                              f"allowed: {', '.join(GROUP_KEYS)}")
    return Experiment(name=str(data["experiment"]), study=str(data.get("study", data["experiment"])),
                      title=str(data.get("title", data["experiment"])), description=str(data.get("description", "")),
                      base=data.get("base", {}) or {}, architectures=data.get("architectures", {}) or {},
                      groups=list(data["groups"]), variants=dict(data["variants"]), path=str(path))


# ------------------------------------------------------------------------------------------ the runner

def experiment_dir(out: str | os.PathLike, experiment: str, variant: str) -> Path:
    """Where the runs of one experiment variant go: ``<out>/<experiment>_<variant>/``."""
    return Path(out) / f"{experiment}_{variant}"


def run_config(spec: RunSpec, out: str | os.PathLike) -> dict[str, Any]:
    """The run's config with a CSV logger whose version directory is ``<out>/<exp>_<variant>/<name>/``."""
    config = copy.deepcopy(spec.config)
    trainer = config.setdefault("trainer", {})
    trainer["logger"] = {"class_path": "pytorch_lightning.loggers.CSVLogger",
                         "init_args": {"save_dir": str(Path(out)), "name": f"{spec.experiment}_{spec.variant}",
                                       "version": spec.name}}
    return config


def run_dir(spec: RunSpec, out: str | os.PathLike) -> Path:
    return experiment_dir(out, spec.experiment, spec.variant) / spec.name


def is_complete(directory: str | os.PathLike) -> bool:
    """A run is complete when its summary.json holds a test NLL (it tests after fit)."""
    try:
        return "test/nll" in RunResult.load(directory).metrics
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return False


def _checkpoint(directory: Path) -> str:
    """The last checkpoint a finished run left (its summary's last, else best)."""
    result = RunResult.load(directory)
    ckpt = result.last_checkpoint or result.best_checkpoint
    if not ckpt or not Path(ckpt).exists():
        raise DataError(f"run {str(directory)!r} left no checkpoint to continue from")
    return ckpt


def write_manifest(experiment: Experiment, variant: str, runs: Iterable[RunSpec], out: str | os.PathLike) -> Path:
    """``experiment.json``: the intended runs, so the report can mark the ones that are missing."""
    directory = experiment_dir(out, experiment.name, variant)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"experiment": experiment.name, "study": experiment.study, "title": experiment.title,
                "variant": variant, "note": experiment.variant_note(variant), "definition": experiment.path,
                "runs": [{"name": r.name, "attrs": r.attrs, "parent": r.parent, "extra_test_k": list(r.extra_test_k),
                          "objective": r.objective, "M": r.M, "K": r.K, "layers": r.layers, "dataset": r.dataset,
                          "estimator": r.config["model"].get("estimator", "reparam"),
                          "beta": r.config["model"].get("beta"), "epochs": r.budget["max_epochs"]}
                         for r in runs]}
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def _subprocess(argv: list[str], log: Path, env: dict[str, str]) -> int:
    with open(log, "a") as stream:
        stream.write(f"$ {' '.join(argv)}\n")
        stream.flush()
        return subprocess.call(argv, stdout=stream, stderr=subprocess.STDOUT, env=env)


def execute(experiment: Experiment, variant: str, out: str | os.PathLike, only: Iterable[str] = (),
            dry_run: bool = False, threads: int | None = None, overrides: Mapping[str, Any] | None = None,
            echo=print) -> dict[str, str]:
    """Run every run of ``variant`` not complete yet, each ``python -m iwae_pl fit --config ...`` in a
    subprocess with its own run directory; returns run name -> ``done``/``skipped``/``failed``/...

    ``only``: run names to restrict to (their parents still have to be complete). ``threads`` sets
    OMP_NUM_THREADS of the runs (on a shared CPU one thread per run avoids oversubscription).
    ``overrides``: config merged into every run (e.g. ``{"data": {"data_dir": "/data"}}``).
    """
    runs = experiment.expand(variant)
    if overrides:
        runs = [replace(r, config=deep_merge(r.config, overrides)) for r in runs]
    wanted = set(only)
    unknown = wanted - {r.name for r in runs}
    if unknown:
        raise ConfigError(f"unknown run(s) {', '.join(sorted(unknown))} in {experiment.name}/{variant}; "
                          f"runs: {', '.join(r.name for r in runs)}")
    write_manifest(experiment, variant, runs, out)
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    status: dict[str, str] = {}
    for spec in runs:
        if wanted and spec.name not in wanted:
            continue
        directory = run_dir(spec, out)
        try:
            status[spec.name] = _execute_one(spec, directory, out, status, dry_run, env, echo)
        except DataError as err:  # e.g. a finished run without a checkpoint: this run fails, the rest go on
            echo(f"[fail] {spec.name}: {err}")
            status[spec.name] = "failed"
    return status


def _execute_one(spec: RunSpec, directory: Path, out, status: dict[str, str], dry_run: bool,
                 env: dict[str, str], echo) -> str:
    config_path = directory.parent / "configs" / f"{spec.name}.yaml"
    argv = [sys.executable, "-m", "iwae_pl", "fit", "--config", str(config_path)]
    parent_dir = directory.parent / spec.parent
    if spec.parent and not is_complete(parent_dir) and not (dry_run and status.get(spec.parent) == "planned"):
        echo(f"[skip] {spec.name}: its parent run {spec.parent} is not complete")
        return "blocked"
    if dry_run:
        ckpt = ["--ckpt_path", f"<last checkpoint of {spec.parent}>"] if spec.parent else []
        echo(f"[plan] {spec.name}: {' '.join(argv[1:] + ckpt)}")
        return "planned"
    if not is_complete(directory):
        directory.mkdir(parents=True, exist_ok=True)
        if spec.parent:
            # the CLI takes the checkpoint's settings only as defaults: this run's config (the new objective) wins
            argv += ["--ckpt_path", _checkpoint(parent_dir)]
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(run_config(spec, out), sort_keys=False))
        (directory / RUN_INFO).write_text(json.dumps(
            {"experiment": spec.experiment, "variant": spec.variant, "study": spec.study, "name": spec.name,
             "group": spec.group, "attrs": spec.attrs, "parent": spec.parent}, indent=2, sort_keys=True) + "\n")
        echo(f"[run] {spec.name}")
        rc = _subprocess(argv, directory / "run.log", env)
        if rc != 0 or not is_complete(directory):
            echo(f"[fail] {spec.name}: exit code {rc}, see {directory / 'run.log'}")
            return "failed"
        state = "done"
    else:
        echo(f"[skip] {spec.name}: complete ({directory / SUMMARY})")
        state = "skipped"
    for k in spec.extra_test_k:
        sub = test_pass_dir(directory, k)
        if is_complete(sub):
            continue
        test_argv = [sys.executable, "-m", "iwae_pl", "test", "--config", str(directory / "config.yaml"),
                     "--ckpt_path", _checkpoint(directory), "--model.test_k", str(k),
                     "--trainer.logger.init_args.save_dir", str(directory),
                     "--trainer.logger.init_args.name", "", "--trainer.logger.init_args.version", sub.name]
        echo(f"[test] {spec.name}: test_k={k}")
        rc = _subprocess(test_argv, directory / "run.log", env)
        if rc != 0 or not is_complete(sub):
            echo(f"[fail] {spec.name}: test with test_k={k} exited {rc}, see {directory / 'run.log'}")
            return "failed"
    return state
