"""The Optuna driver: a study from a study file, workers that run each trial as its own process.

Each trial is an ordinary run: the driver writes ``<sweep_dir>/trials/trial_NNNN/trial.yaml`` (the
base config + the fixed overrides + the sampled settings + a logger writing into that folder) and
runs ``python -m iwae_pl fit --config .../trial.yaml`` in a subprocess, so that a trial may use
``--trainer.devices N --trainer.strategy ddp`` (Lightning's DDP inside an Optuna objective in one
process would re-execute the script per rank with different sampled values). The run leaves its
resolved ``config.yaml`` and ``summary.json`` there; the objective value is read from the summary.

Storage: the default is a JournalStorage file ``<sweep_dir>/study.journal`` (no server; re-running
the command resumes the study); any Optuna RDB URL works for many machines (PostgreSQL tested), with
heartbeats so that a trial whose worker died becomes FAIL and is retried with the same parameters.

Workers never duplicate or lose trials: a worker takes the next trial under a lock (a file lock for
the journal and SQLite, a PostgreSQL advisory lock) and only while the study has fewer than
``n_trials`` trials, counting a retried trial once; the grid sampler gets the same seed in every
worker, and Optuna's GridSampler gives trial number i the i-th point of its (seeded) grid order.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..errors import ConfigError
from ..runs.result import RunResult
from .pruning import (ENV_METRIC, ENV_PRUNER, ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ERROR_ATTR, PRUNED_ATTR,
                      make_pruner, open_storage)
from .spec import ParamSpec, StudySpec, trial_config, trial_settings

JOURNAL = "study.journal"
TRIALS = "trials"
PRUNING_CALLBACK = {"class_path": "iwae_pl.sweeps.pruning.SweepPruning"}


def storage_address(spec: StudySpec, sweep_dir: Path) -> str:
    """The storage: the study file's URL if given, else the journal file in the sweep directory."""
    return spec.storage or str((sweep_dir / JOURNAL).resolve())


def worker_devices(n_workers: int, gpus: Sequence[str], per_worker: int = 1) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each worker: ``per_worker`` GPUs each, dealt in order.

    ``gpus`` are the visible device ids (``[]`` on a CPU machine: every worker gets None, i.e. the
    variable is left as it is). Example: 4 workers over GPUs 0-3 -> "0", "1", "2", "3"; 2 workers with 2 each
    -> "0,1", "2,3". More workers than GPU groups is refused (they would share a device).
    """
    if not gpus:
        return [None] * n_workers
    groups = len(gpus) // per_worker
    if n_workers > groups:
        raise ConfigError(f"--workers {n_workers} with {per_worker} GPU(s) each needs {n_workers * per_worker} "
                          f"GPUs, {len(gpus)} visible")
    return [",".join(gpus[i * per_worker:(i + 1) * per_worker]) for i in range(n_workers)]


def visible_gpus() -> list[str]:
    """The GPU ids a worker may use: CUDA_VISIBLE_DEVICES if set, else 0..n-1 from torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


# --- the lock around "count, then ask" ------------------------------------------------------------
class AskLock:
    """Serializes taking a trial across workers: flock for a journal file or SQLite database, a
    PostgreSQL advisory lock for a PostgreSQL URL, nothing for other databases. Re-entrant-free:
    ``acquire`` then ``release`` (idempotent), or ``with AskLock(address):``."""

    KEY = int.from_bytes(hashlib.sha1(b"iwae_pl.sweep").digest()[:7], "big")

    def __init__(self, address: str):
        self.address = address
        self._file = self._conn = None

    def acquire(self) -> None:
        address = self.address
        if "://" not in address or address.startswith("sqlite"):
            path = address.split("///", 1)[-1] if address.startswith("sqlite") else address
            self._file = open(f"{path}.ask.lock", "a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif address.startswith("postgresql"):
            import sqlalchemy

            self._engine = sqlalchemy.create_engine(address, poolclass=sqlalchemy.pool.NullPool)
            self._conn = self._engine.connect()
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.KEY})

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            import sqlalchemy

            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.KEY})
            self._conn.close()
            self._engine.dispose()
            self._conn = None

    def __enter__(self) -> "AskLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --- study, sampler, parameters -------------------------------------------------------------------
def make_sampler(spec: StudySpec, worker: int = 0):
    """Grid: the same seed in every worker (one grid order for all). TPE/random: seed + worker
    index, so that workers do not propose the same points."""
    import optuna

    seed = spec.sampler.get("seed", 0)
    args = {k: v for k, v in spec.sampler.items() if k not in ("name", "seed")}
    if spec.sampler_name == "grid":
        return optuna.samplers.GridSampler(spec.grid(), seed=seed)
    seed = None if seed is None else seed + worker
    cls = optuna.samplers.RandomSampler if spec.sampler_name == "random" else optuna.samplers.TPESampler
    try:
        return cls(seed=seed, **args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler {spec.sampler_name}: {err}") from None


def open_study(spec: StudySpec, address: str, worker: int = 0):
    """Create the study or load it (re-running resumes); the storage sends heartbeats if it can."""
    import optuna

    # Under the lock: RDBStorage creates Optuna's tables, and two machines doing that at once on an
    # empty database collide (PostgreSQL: "duplicate key ... pg_type_typname_nsp_index").
    with AskLock(address):
        storage = open_storage(address, spec.heartbeat)
        study = optuna.create_study(study_name=spec.study_name, storage=storage, load_if_exists=True,
                                    direction=spec.direction, sampler=make_sampler(spec, worker),
                                    pruner=make_pruner(spec.pruner))
        for params in spec.enqueue:  # queued once: a resumed study finds them already there
            study.enqueue_trial(params, skip_if_exists=True)
    return study, storage


def suggest(trial, param: ParamSpec) -> Any:
    """One parameter's value for this trial (a split's value is M)."""
    if param.type in ("split", "categorical"):
        return trial.suggest_categorical(param.path, param.grid_values())
    if param.type == "float":
        return trial.suggest_float(param.path, param.low, param.high, log=param.log)
    return trial.suggest_int(param.path, int(param.low), int(param.high), log=param.log, step=param.step or 1)


def budget_used(trials) -> int:
    """Trials that spend the study's n_trials: a retried trial and its retries count once."""
    return len({t.system_attrs.get("failed_trial", t.number) for t in trials})


# --- one trial ------------------------------------------------------------------------------------
def _death_signal():
    """A function for ``preexec_fn`` (Linux): the trial process gets SIGKILL when the worker dies, so
    that a killed worker leaves no orphan training behind (its trial then goes stale and is retried).
    libc is looked up here, in the worker: between fork and exec (where the worker's heartbeat thread
    may hold locks) the child only makes the one call. None where prctl is not available."""
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _last_error(log: Path) -> str:
    """What a failed run's output says about why: from the last line naming an error (with the few
    lines after it, where argument parsers explain), else the last line; one line."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    starts = [i for i, line in enumerate(lines) if "error" in line.lower()]
    text = " ".join(lines[starts[-1]:starts[-1] + 6]) if starts else (lines[-1] if lines else "no output")
    return text[:500]


class TrialFailed(Exception):
    """A trial that ended without a usable metric (crash, bad setting, NaN, timeout)."""


def run_trial(trial, spec: StudySpec, sweep_dir: Path, address: str, trial_args: Sequence[str] = ()) -> float:
    """Write the trial's config, run it as ``python -m iwae_pl fit``, return its metric.

    Raises ``optuna.TrialPruned`` when the pruning callback stopped it and ``TrialFailed`` (message:
    the error) when the run failed or left no finite metric.
    """
    import optuna

    params = {p.path: suggest(trial, p) for p in spec.space}
    settings = trial_settings(params, spec)
    version = f"trial_{trial.number:04d}"
    run_dir = sweep_dir / TRIALS / version
    run_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [PRUNING_CALLBACK] if spec.pruner["name"] != "none" else []
    config = trial_config(spec, settings, str(sweep_dir / TRIALS), version, callbacks)
    (run_dir / "trial.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for key in ("model.objective", "model.M", "model.K"):
        if key in settings:
            trial.set_user_attr(key.split(".")[1], settings[key])
    trial.set_user_attr("run_dir", str(run_dir))
    env = dict(os.environ, **{ENV_STORAGE: address, ENV_STUDY: spec.study_name, ENV_TRIAL: str(trial.number),
                              ENV_METRIC: spec.metric, ENV_PRUNER: json.dumps(spec.pruner)})
    command = [sys.executable, "-m", "iwae_pl", "fit", "--config", str(run_dir / "trial.yaml"),
               *spec.trial_args, *trial_args]
    log = run_dir / "fit.log"
    with open(log, "w") as out:
        # its own process group: a timeout ends every DDP rank the trial started, not only rank 0
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_death_signal(),
                                start_new_session=True)
        try:
            code = proc.wait(timeout=spec.trial_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TrialFailed(f"timed out after {spec.trial_timeout} s") from None
    attrs = trial.study._storage.get_trial(trial._trial_id).user_attrs
    if PRUNED_ATTR in attrs:
        raise optuna.TrialPruned(f"pruned at epoch {attrs[PRUNED_ATTR]}")
    if ERROR_ATTR in attrs:
        raise TrialFailed(attrs[ERROR_ATTR])
    if code != 0:
        raise TrialFailed(f"exit code {code}: {_last_error(log)}")
    try:
        value = RunResult.load(run_dir).metrics.get(spec.metric)
    except FileNotFoundError:
        raise TrialFailed(f"the run left no summary.json in {run_dir}") from None
    if value is None or value != value or abs(value) == float("inf"):
        raise TrialFailed(f"metric {spec.metric} is {value!r} in {run_dir / 'summary.json'}")
    return value


def _study_complete(study, spec: StudySpec, heartbeat: int | None) -> bool | None:
    """True when the study has its n_trials and nothing is queued; None (wait and look again) when,
    with heartbeats, other workers' trials still run: one may go stale (its worker died) and come
    back as a retry."""
    import optuna
    from optuna.trial import TrialState

    if heartbeat:
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials) or budget_used(trials) < spec.n_trials:
        return False
    if heartbeat and any(t.state == TrialState.RUNNING for t in trials):
        return None
    return True


def work(spec: StudySpec, sweep_dir: Path, worker: int = 0, trial_args: Sequence[str] = ()) -> int:
    """One worker: take and run trials until the study has its n_trials. Returns trials run.

    Each trial goes through ``study.optimize(n_trials=1)`` (Optuna's heartbeat thread, stale-trial
    check, pruned/failed bookkeeping) entered under the ask lock, which the objective releases once
    Optuna has created the trial.
    """
    address = storage_address(spec, sweep_dir)
    study, storage = open_study(spec, address, worker)
    heartbeat = getattr(storage, "heartbeat_interval", None)
    lock = AskLock(address)

    def objective(trial) -> float:
        lock.release()
        try:
            return run_trial(trial, spec, sweep_dir, address, trial_args)
        except (TrialFailed, ConfigError) as err:
            trial.set_user_attr(ERROR_ATTR, str(err))
            print(f"iwae_pl sweep: trial {trial.number} failed: {err}", file=sys.stderr)
            raise

    done = 0
    while True:
        lock.acquire()
        try:
            complete = _study_complete(study, spec, heartbeat)
            if complete is False:
                study.optimize(objective, n_trials=1, catch=(TrialFailed, ConfigError))
                done += 1
        finally:
            lock.release()
        if complete:
            return done
        if complete is None:
            time.sleep(min(heartbeat, 5))


def _worker_command(argv: Sequence[str], worker: int) -> list[str]:
    """The sweep command of one worker process (its index before the trials' ``--`` arguments)."""
    own, trial_args = _split_argv(argv)
    return [sys.executable, "-m", "iwae_pl", "sweep", *own, "--worker-index", str(worker),
            *(["--", *trial_args] if trial_args else [])]


def run_workers(spec: StudySpec, sweep_dir: Path, argv: Sequence[str], n_workers: int, gpus_per_worker: int) -> int:
    """Start ``n_workers`` worker processes on one study (each with its own GPUs); their exit code."""
    devices = worker_devices(n_workers, visible_gpus() if gpus_per_worker > 0 else [], max(gpus_per_worker, 1))
    open_study(spec, storage_address(spec, sweep_dir))  # create it once, before the workers race
    procs = []
    for i, dev in enumerate(devices):
        env = dict(os.environ) if dev is None else dict(os.environ, CUDA_VISIBLE_DEVICES=dev)
        procs.append(subprocess.Popen(_worker_command(argv, i), env=env))
    return max(p.wait() for p in procs)


def summarize(spec: StudySpec, sweep_dir: Path) -> str:
    """One paragraph: trial states, the best trial's value, parameters and run directory."""
    import optuna

    study = optuna.load_study(study_name=spec.study_name, storage=open_storage(storage_address(spec, sweep_dir)))
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    lines = [f"study {spec.study_name!r}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))]
    if states.get("COMPLETE"):
        best = study.best_trial
        lines.append(f"best: trial {best.number}, {spec.metric} = {best.value:.6g}, params {best.params}, "
                     f"run {best.user_attrs.get('run_dir')}")
    return "\n".join(lines)


def sweep_main(argv: list[str]) -> int:
    """``python -m iwae_pl sweep --config STUDY.yaml [--workers N] [--storage URL] [--dir DIR] [-- fit args]``."""
    import argparse

    from .spec import load_spec

    parser = argparse.ArgumentParser(prog="iwae_pl sweep", description="Run (or resume) an Optuna study of runs.")
    parser.add_argument("--config", required=True, help="the study file (e.g. sweeps/optuna_mk.yaml)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes on the study")
    parser.add_argument("--gpus-per-worker", type=int, default=1,
                        help="GPUs each worker gets through CUDA_VISIBLE_DEVICES when GPUs exist (0: leave it alone)")
    parser.add_argument("--storage", help="an Optuna RDB URL (e.g. postgresql://user@host/db); default: "
                                          "the journal file <dir>/study.journal")
    parser.add_argument("--dir", help="the sweep directory (default: the study file's sweep_dir)")
    parser.add_argument("--n-trials", type=int, help="override the study file's n_trials")
    parser.add_argument("--study-name", help="override the study file's study_name")
    parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    own, trial_args = _split_argv(argv)
    args = parser.parse_args(own)
    spec = load_spec(args.config)
    if args.storage:
        spec.storage = args.storage
    if args.study_name:
        spec.study_name = args.study_name
    if args.n_trials is not None:
        spec.n_trials = args.n_trials
    if args.workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {args.workers}")
    sweep_dir = Path(args.dir or spec.sweep_dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if args.workers > 1 and args.worker_index is None:
        code = run_workers(spec, sweep_dir, argv, args.workers, args.gpus_per_worker)
    else:
        work(spec, sweep_dir, args.worker_index or 0, trial_args)
        code = 0
    if args.worker_index is None:
        print(summarize(spec, sweep_dir))
    if code:
        sys.exit(code)
    return code


def _split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The sweep's own arguments, and the trial's extra fit arguments after ``--``."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []
