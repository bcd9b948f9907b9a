"""Optuna sweeps for real: tiny trials on the embedded digits, each a `python -m iwae_pl fit` process.

Journal-file and PostgreSQL storage, two workers, a worker killed mid-trial, pruning (also of a
2-process CPU DDP trial), the dashboard over HTTP, the report, and a trial re-run from its config.
"""
from __future__ import annotations

import csv
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from iwae_pl.cli import main
from iwae_pl.runs import RunResult
from iwae_pl.sweeps.pruning import open_storage
from iwae_pl.sweeps.spec import splits
from iwae_pl.sweeps.table import heatmap

ROOT = Path(__file__).resolve().parents[1]
# Tiny trials: a 4-unit latent, 1 epoch of 5 batches, 100 validation / test points, small k.
TINY = {"model.layers": [{"latent": 4, "hidden": [16]}], "model.val_k": 5, "model.test_k": 20,
        "data.eval_batch_size": 100, "trainer.max_epochs": 1, "trainer.check_val_every_n_epoch": 1,
        "trainer.limit_train_batches": 5, "trainer.limit_val_batches": 1, "trainer.limit_test_batches": 1,
        "trainer.enable_progress_bar": False, "trainer.enable_model_summary": False}


def write_study(path: Path, **changes) -> Path:
    raw = {"study_name": "tiny", "base_config": str(ROOT / "sweeps" / "quickstart.yaml"), "overrides": dict(TINY),
           "metric": "val/bound", "direction": "maximize", "sampler": {"name": "grid", "seed": 0}, "n_trials": 4,
           "search_space": {"split": {"type": "split", "budget": 8}}, "sweep_dir": str(path.parent / "sweep")}
    overrides = changes.pop("overrides", {})
    raw.update(changes)
    raw["overrides"].update(overrides)
    path.write_text(yaml.safe_dump(raw))
    return path


def sweep_command(study: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "iwae_pl", "sweep", "--config", str(study), *args]


def sweep(study: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    done = subprocess.run(sweep_command(study, *args), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def trials(address: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(address)).get_trials()


def assert_each_split_once(ts, budget: int) -> None:
    complete = [t for t in ts if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == len(ts) == len(splits(budget))
    assert sorted((t.user_attrs["M"], t.user_attrs["K"]) for t in complete) == splits(budget)
    assert len({t.user_attrs["run_dir"] for t in ts}) == len(ts)
    for t in complete:  # each value is its own run's metric
        assert t.value == RunResult.load(t.user_attrs["run_dir"]).metrics["val/bound"]


@pytest.fixture(scope="module")
def grid4(tmp_path_factory):
    """A 4-split grid (M·K = 8) on the journal file, with test after fit, run once."""
    root = tmp_path_factory.mktemp("grid4")
    study = write_study(root / "study.yaml", overrides={"test_after_fit": True})
    out = sweep(study)
    return study, root / "sweep", out


def test_grid_of_four_splits_evaluates_each_split_once(grid4):
    study, sweep_dir, out = grid4
    ts = trials(str(sweep_dir / "study.journal"))
    assert_each_split_once(ts, 8)
    for t in ts:
        M, K = t.user_attrs["M"], t.user_attrs["K"]
        assert t.params["split"] == M and M * K == 8
        config = yaml.safe_load((Path(t.user_attrs["run_dir"]) / "config.yaml").read_text())
        assert (config["model"]["M"], config["model"]["K"]) == (M, K)
        assert config["model"]["objective"] == ("iwae" if M == 1 else "miwae")
    best = max(ts, key=lambda t: t.value)
    assert f"best: trial {best.number}," in out.stdout


def test_rerunning_the_command_resumes_the_study(grid4, capsys):
    study, sweep_dir, _ = grid4
    before = trials(str(sweep_dir / "study.journal"))
    main(["sweep", "--config", str(study)])  # in this process: a resumed study starts no trial process
    after = trials(str(sweep_dir / "study.journal"))
    assert [(t.number, t.state, t.params, t.value) for t in after] == [(t.number, t.state, t.params, t.value) for t in before]
    best = max(before, key=lambda t: t.value)
    assert f"best: trial {best.number}, val/bound = {best.value:.6g}" in capsys.readouterr().out


def test_report_lists_every_split_with_its_metrics(grid4, tmp_path):
    study, sweep_dir, _ = grid4
    main(["sweep-report", "--config", str(study), "--out", str(tmp_path)])
    with open(tmp_path / "sweep_report.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["split"] for r in rows) == sorted(f"{m}×{k}" for m, k in splits(8))
    for r in rows:
        summary = RunResult.load(r["run_dir"]).metrics
        assert float(r["test/nll"]) == pytest.approx(summary["test/nll"])
        assert float(r["best val/bound"]) >= summary["val/bound"] - 1e-9  # the best logged, not below the last
        assert r["state"] == "COMPLETE"
    md = (tmp_path / "sweep_report.md").read_text()
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + 4 and "| split |" in md
    assert (tmp_path / "sweep_mk.png").stat().st_size > 5000


def test_report_of_a_folder_of_runs(grid4, tmp_path, capsys):
    _, sweep_dir, _ = grid4
    main(["sweep-report", "--runs", str(sweep_dir / "trials"), "--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split(" | ")[1] for line in lines[2:] if line.startswith("| ")) \
        == sorted(f"{m}×{k}" for m, k in splits(8))


def test_report_of_an_empty_folder_is_a_data_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep-report", "--runs", str(tmp_path)])
    assert info.value.code == 1
    assert capsys.readouterr().err.strip().startswith(f"iwae_pl: data error: no runs (directories with summary.json) "
                                                      f"found below '{tmp_path}'")


def test_heatmap_averages_each_cell(tmp_path):
    rows = [{"a": 1, "b": "x", "m": 1.0}, {"a": 1, "b": "x", "m": 3.0}, {"a": 2, "b": "y", "m": 5.0}, {"a": 2, "m": 9.0}]
    path = heatmap(rows, "a", "b", "m", tmp_path / "h.png")
    assert path.stat().st_size > 3000
    with pytest.raises(Exception, match="no run has values for both 'a' and 'c'"):
        heatmap(rows, "a", "c", "m", tmp_path / "h2.png")


def test_a_trials_saved_config_rerun_with_fit_reproduces_its_metrics(grid4, tmp_path):
    _, sweep_dir, _ = grid4
    t = trials(str(sweep_dir / "study.journal"))[0]
    run_dir = Path(t.user_attrs["run_dir"])
    # the rerun logs outside the shared trials/ folder, which the report tests read as the study's runs
    done = subprocess.run([sys.executable, "-m", "iwae_pl", "fit", "--config", str(run_dir / "config.yaml"),
                           "--trainer.logger.init_args.save_dir", str(tmp_path),
                           "--trainer.logger.init_args.version", "rerun"], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    (rerun,) = tmp_path.glob("**/rerun")
    original, again = RunResult.load(run_dir).metrics, RunResult.load(rerun).metrics
    for name in ("val/bound", "val/nll", "test/nll", "test/bound"):
        assert again[name] == pytest.approx(original[name], rel=1e-5, abs=1e-5), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_trials(storage: str, study_name: str) -> list[dict]:
    """Start optuna-dashboard on 127.0.0.1 against ``storage`` and read the study's trials over HTTP."""
    port = _free_port()
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
    if exe is None:
        pytest.skip("optuna-dashboard is not installed (it is in the test extra)")
    proc = subprocess.Popen([exe, storage, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()  # stderr is read only once the process has ended
                    pytest.fail(f"optuna-dashboard did not serve: {proc.communicate(timeout=30)[1].decode()[-2000:]}")
                time.sleep(0.5)
        study = next(s for s in studies if s["study_name"] == study_name)
        with urllib.request.urlopen(f"{base}/api/studies/{study['study_id']}", timeout=10) as r:
            return json.load(r)["trials"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dashboard_serves_the_study_from_the_journal_file(grid4):
    _, sweep_dir, _ = grid4
    served = dashboard_trials(str(sweep_dir / "study.journal"), "tiny")
    stored = trials(str(sweep_dir / "study.journal"))
    assert sorted(t["number"] for t in served) == [t.number for t in stored]
    assert {t["state"] for t in served} == {"Complete"}
    for t in served:
        original = stored[t["number"]]
        assert t["values"] == [pytest.approx(original.value)]
        assert {p["name"]: p["param_external_value"] for p in t["params"]} == {"split": str(original.params["split"])}


def test_a_failed_trial_is_recorded_and_the_study_continues(tmp_path):
    study = write_study(tmp_path / "study.yaml", n_trials=2,
                        search_space={"model.estimator": {"type": "categorical", "choices": ["reparam", "bogus"]}})
    main(["sweep", "--config", str(study)])
    ts = {t.params["model.estimator"]: t for t in trials(str(tmp_path / "sweep" / "study.journal"))}
    assert ts["reparam"].state == optuna.trial.TrialState.COMPLETE
    assert ts["bogus"].state == optuna.trial.TrialState.FAIL
    error = ts["bogus"].user_attrs["error"]
    assert error.startswith("exit code 2: ") and "model.estimator" in error and "bogus" in error


def test_a_trial_past_its_timeout_is_killed_and_failed(tmp_path):
    study = write_study(tmp_path / "study.yaml", n_trials=1, trial_timeout=2)
    main(["sweep", "--config", str(study)])
    (t,) = trials(str(tmp_path / "sweep" / "study.journal"))
    assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["error"] == "timed out after 2 s"
    assert not (Path(t.user_attrs["run_dir"]) / "summary.json").exists()


@pytest.mark.slow
def test_two_workers_on_a_journal_file_evaluate_the_7_splits_of_64_once(tmp_path):
    study = write_study(tmp_path / "study.yaml", n_trials=7, search_space={"split": {"type": "split", "budget": 64}})
    sweep(study, "--workers", "2", "--", "--trainer.limit_train_batches", "2")  # after --: every trial's fit
    ts = trials(str(tmp_path / "sweep" / "study.journal"))
    assert_each_split_once(ts, 64)
    assert sorted(t.number for t in ts) == list(range(7))
    for t in ts:
        config = yaml.safe_load((Path(t.user_attrs["run_dir"]) / "config.yaml").read_text())
        assert config["trainer"]["limit_train_batches"] == 2


@pytest.mark.slow
def test_two_workers_on_postgresql_neither_duplicate_nor_lose_trials(tmp_path, postgres_url):
    study = write_study(tmp_path / "study.yaml", storage=postgres_url, overrides={"trainer.limit_train_batches": 2})
    workers = [subprocess.Popen(sweep_command(study), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]  # two machines: the same command, the same URL
    for w in workers:
        _, err = w.communicate(timeout=1200)  # a hang guard: the pair takes ~1-2 min
        assert w.returncode == 0, err[-3000:]
    ts = trials(postgres_url)
    assert_each_split_once(ts, 8)
    served = dashboard_trials(postgres_url, "tiny")  # the dashboard reads the RDB URL directly
    assert sorted(t["number"] for t in served) == sorted(t.number for t in ts)


def test_a_worker_creates_the_tables_of_an_empty_database_only_under_the_lock(tmp_path, postgres_url):
    """Two machines starting on an empty database must not create Optuna's tables at once (they
    collide on PostgreSQL's type catalogue): opening the study waits for the lock before any table."""
    import threading

    import sqlalchemy

    from iwae_pl.sweeps.optuna_driver import AskLock, open_study
    from iwae_pl.sweeps.spec import load_spec

    spec = load_spec(write_study(tmp_path / "study.yaml", storage=postgres_url))
    engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    opened, errors = [], []

    def worker():
        try:
            opened.append(open_study(spec, postgres_url)[0])
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    with AskLock(postgres_url):  # another machine holds the lock
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(timeout=3)
        assert thread.is_alive() and not errors
        assert sqlalchemy.inspect(engine).get_table_names() == []
    thread.join(timeout=60)
    engine.dispose()
    assert not errors and [s.study_name for s in opened] == ["tiny"]
    assert "studies" in sqlalchemy.inspect(engine).get_table_names()


def _processes_naming(word: str) -> list[int]:
    """PIDs of the live processes whose command line contains ``word`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and word in (entry / "cmdline").read_bytes().decode(errors="replace") \
                    and (entry / "stat").read_text().split(") ")[-1][0] != "Z":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_a_killed_worker_leaves_its_trial_failed_and_it_is_retried(tmp_path, postgres_url):
    study = write_study(tmp_path / "study.yaml", storage=postgres_url, n_trials=1, sampler={"name": "tpe", "seed": 3},
                        search_space={"model.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
                        heartbeat={"interval": 1, "grace_period": 3, "max_retry": 1})
    # worker A gets a long trial, then dies mid-trial
    a = subprocess.Popen(sweep_command(study, "--", "--trainer.max_epochs", "1000", "--trainer.limit_train_batches", "20"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "sweep" / "trials" / "trial_0000" / "metrics.csv").exists():  # training has begun
        assert a.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    trial_dir = str(tmp_path / "sweep" / "trials" / "trial_0000")
    assert _processes_naming(trial_dir)  # the trial's fit runs as the worker's child
    a.send_signal(signal.SIGKILL)
    a.wait()
    deadline = time.monotonic() + 60
    while _processes_naming(trial_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_naming(trial_dir)  # the worker's death took its trial down (no orphan training)
    (killed,) = trials(postgres_url)
    assert killed.state == optuna.trial.TrialState.RUNNING
    # worker B (another machine) waits for the heartbeat to go stale, then runs the retry
    sweep(study, "--", "--trainer.max_epochs", "1")
    first, retry = trials(postgres_url)
    assert first.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == first.params and retry.system_attrs["failed_trial"] == 0
    assert RunResult.load(retry.user_attrs["run_dir"]).metrics["val/bound"] == retry.value


def _pruning_study(path: Path) -> Path:
    return write_study(path, n_trials=2, sampler={"name": "random", "seed": 0},
                       pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
                       search_space={"model.lr": {"type": "float", "low": 1e-7, "high": 0.1, "log": True}},
                       enqueue=[{"model.lr": 0.01}, {"model.lr": 1e-7}],  # a good trial, then a bad one
                       overrides={"trainer.max_epochs": 4, "trainer.limit_train_batches": 10}, trial_timeout=600)


def _assert_bad_lr_pruned(sweep_dir: Path) -> None:
    good, bad = trials(str(sweep_dir / "study.journal"))
    assert good.params["model.lr"] == 0.01 and good.state == optuna.trial.TrialState.COMPLETE
    assert sorted(good.intermediate_values) == [0, 1, 2, 3]
    assert bad.params["model.lr"] == 1e-7 and bad.state == optuna.trial.TrialState.PRUNED
    assert bad.user_attrs["pruned_at_step"] == 0 and sorted(bad.intermediate_values) == [0]
    assert bad.intermediate_values[0] < good.intermediate_values[0]
    with open(Path(bad.user_attrs["run_dir"]) / "metrics.csv") as f:
        epochs = {int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/bound")}
    assert epochs == {0}  # training stopped after the first validation of 4


def test_a_bad_learning_rate_is_pruned(tmp_path):
    sweep(_pruning_study(tmp_path / "study.yaml"))
    _assert_bad_lr_pruned(tmp_path / "sweep")


@pytest.mark.slow
def test_a_two_process_ddp_trial_is_pruned_on_all_ranks(tmp_path):
    sweep(_pruning_study(tmp_path / "study.yaml"),
          "--", "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu")
    _assert_bad_lr_pruned(tmp_path / "sweep")
    # both ranks stopped together: a rank that went on alone would have hung in its next collective
    # until the trial timeout (the trial would then be FAIL, not PRUNED), and rank 1 left no error
    log = (tmp_path / "sweep" / "trials" / "trial_0001" / "fit.log").read_text()
    assert "Traceback" not in log and "GLOBAL_RANK: 1" in log
