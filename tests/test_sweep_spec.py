"""Study files, the M×K split helper, trial configs, worker devices and the trial budget (no training)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from iwae_pl.errors import ConfigError
from iwae_pl.model.objectives import make_objective
from iwae_pl.cli import main
from iwae_pl.sweeps.optuna_driver import _worker_command, budget_used, make_sampler, worker_devices
from iwae_pl.sweeps.pruning import make_pruner
from iwae_pl.sweeps.spec import load_spec, parse_spec, split_settings, splits, trial_config, trial_settings

ROOT = Path(__file__).resolve().parents[1]


def study(**changes) -> dict:
    raw = {"study_name": "s", "base_config": "quickstart.yaml", "metric": "val/bound", "direction": "maximize",
           "sampler": "grid", "n_trials": 7, "search_space": {"split": {"type": "split", "budget": 64}}}
    raw.update(changes)
    return raw


@pytest.mark.parametrize("budget", [1, 7, 12, 64, 100])
def test_splits_are_all_divisor_pairs(budget):
    got = splits(budget)
    brute = [(m, k) for m in range(1, budget + 1) for k in range(1, budget + 1) if m * k == budget]
    assert got == brute
    assert len({m for m, _ in got}) == len(got)


def test_splits_of_64_are_the_seven_of_rainforth():
    assert splits(64) == [(1, 64), (2, 32), (4, 16), (8, 8), (16, 4), (32, 2), (64, 1)]


@pytest.mark.parametrize("bad", [0, -4, 2.5, True])
def test_split_budget_must_be_a_positive_integer(bad):
    with pytest.raises(ConfigError, match="split budget must be an integer >= 1"):
        splits(bad)


@pytest.mark.parametrize("objective", ["iwae", "miwae", "piwae", "ciwae", "vr", "vae"])
@pytest.mark.parametrize("M,K", splits(16))
def test_every_split_setting_builds_and_spends_the_budget(objective, M, K):
    s = split_settings(objective, M, K)
    built = make_objective(s["objective"], s["M"], s["K"])
    m, k = built.sample_shape
    assert m * k == 16
    if objective != "vae":  # the ELBO does not depend on the grouping
        assert (m, k) == (M, K)


def test_iwae_becomes_miwae_only_when_m_exceeds_one():
    assert split_settings("iwae", 1, 64)["objective"] == "iwae"
    assert split_settings("iwae", 8, 8)["objective"] == "miwae"
    assert split_settings("piwae", 8, 8) == {"objective": "piwae", "M": 8, "K": 8}


def test_the_shipped_study_file_loads(tmp_path):
    spec = load_spec(ROOT / "sweeps" / "optuna_mk.yaml")
    assert spec.sampler_name == "grid"
    assert sorted(spec.grid()["split"]) == [m for m, _ in splits(64)]
    assert spec.n_trials == len(spec.grid()["split"]) * len(spec.grid().get("model.objective", [None]))


@pytest.mark.parametrize("changes,message", [
    ({"colour": 1}, "unknown study key 'colour'"),
    ({"sampler": "annealing"}, "unknown sampler 'annealing'; allowed: grid, tpe, random"),
    ({"pruner": {"name": "percentile"}}, "unknown pruner 'percentile'"),
    ({"direction": "up"}, "unknown direction 'up'"),
    ({"n_trials": 0}, "n_trials must be an integer >= 1, got 0"),
    ({"search_space": {}}, "search_space must be a non-empty mapping"),
    ({"search_space": {"model.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}},
     "the grid sampler needs 'grid: \\[values\\]' for a float parameter"),
    ({"sampler": "tpe", "search_space": {"model.lr": {"type": "float", "low": 0, "high": 1, "log": True}}},
     "a log-scale range needs low > 0"),
    ({"sampler": "tpe", "search_space": {"model.lr": {"type": "float", "low": 1, "high": 0.1}}},
     "low must be below high"),
    ({"search_space": {"model.M": {"type": "split", "budget": 8}}}, "a split parameter must be named 'split'"),
    ({"search_space": {"split": {"type": "split", "budget": 8, "low": 1}}}, "unknown key 'low' for type split"),
    ({"search_space": {"model.objective": {"type": "categorical", "choices": []}}}, "choices must be a non-empty list"),
    ({"search_space": {"model.x": {"type": "normal"}}}, "unknown search_space.model.x.type 'normal'"),
    ({"base_config": "nowhere.yaml"}, "base_config 'nowhere.yaml' not found"),
    ({"enqueue": [{"model.lr": 0.1}]}, "enqueue: 'model.lr' is not in the search space"),
    ({"trial_timeout": -5}, "trial_timeout must be a finite number in \\(0.0, inf\\], got -5"),
    ({"heartbeat": {"interval": 0}}, "heartbeat.interval must be an integer >= 1, got 0"),
])
def test_bad_study_files_are_refused_with_one_line(changes, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_spec(study(**changes), ROOT / "sweeps")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("model: {lr: 0.1\n", "base_config 'broken.yaml': invalid YAML at line 2, column 1"),
    ("- a list\n", "base_config 'broken.yaml': expected a mapping of settings \\(key: value\\), got a list"),
])
def test_a_broken_base_config_is_refused_with_one_line(tmp_path, text, message):
    (tmp_path / "broken.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        parse_spec(study(base_config="broken.yaml"), tmp_path)
    assert "\n" not in str(info.value)


def test_a_missing_study_file_names_itself(tmp_path):
    with pytest.raises(ConfigError, match="study file .*nope.yaml' does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_trial_config_merges_settings_and_puts_the_run_in_the_sweep_dir(tmp_path):
    spec = parse_spec(study(overrides={"trainer.max_epochs": 3, "model.layers": [{"latent": 4, "hidden": [16]}]},
                           search_space={"split": {"type": "split", "budget": 64},
                                         "model.objective": {"type": "categorical", "choices": ["iwae", "piwae"]}}),
                      ROOT / "sweeps")
    settings = trial_settings({"split": 8, "model.objective": "iwae"}, spec)
    assert settings == {"model.objective": "miwae", "model.M": 8, "model.K": 8}
    config = trial_config(spec, settings, str(tmp_path / "trials"), "trial_0003", [{"class_path": "X"}])
    assert (config["model"]["M"], config["model"]["K"], config["model"]["objective"]) == (8, 8, "miwae")
    assert config["model"]["lr"] == 0.003 and config["trainer"]["max_epochs"] == 3  # base kept, override applied
    assert config["model"]["layers"] == [{"latent": 4, "hidden": [16]}]
    logger = config["trainer"]["logger"]["init_args"]
    assert (Path(logger["save_dir"]) / logger["name"] / logger["version"]) == tmp_path / "trials" / "trial_0003"
    assert config["trainer"]["callbacks"][-1] == {"class_path": "X"}
    assert len(config["trainer"]["callbacks"]) == 2  # the base config's checkpoint callback is kept
    assert spec.base["model"].get("M") is None  # the base config is not changed in place


def test_trial_config_refuses_a_path_through_a_value():
    spec = parse_spec(study(overrides={"model.lr.x": 1}), ROOT / "sweeps")
    with pytest.raises(ConfigError, match="config path 'model.lr.x': 'lr' holds 0.003, not a mapping"):
        trial_config(spec, {}, "/tmp/t", "trial_0000")


def test_config_paths_reach_into_lists(tmp_path):
    spec = parse_spec(study(overrides={"trainer.callbacks.0.init_args.save_top_k": 3}), ROOT / "sweeps")
    config = trial_config(spec, {}, "/tmp/t", "trial_0000")
    assert config["trainer"]["callbacks"][0]["init_args"] == {"monitor": "val/nll", "save_last": True, "save_top_k": 3}
    spec = parse_spec(study(overrides={"trainer.callbacks.5.init_args.x": 3}), ROOT / "sweeps")
    with pytest.raises(ConfigError, match="'5' is not an index of a list of 1"):
        trial_config(spec, {}, "/tmp/t", "trial_0000")


def test_worker_devices_deal_gpus_in_order():
    assert worker_devices(4, ["0", "1", "2", "3"]) == ["0", "1", "2", "3"]
    assert worker_devices(2, ["0", "1", "2", "3"], per_worker=2) == ["0,1", "2,3"]
    assert worker_devices(2, ["4", "6"]) == ["4", "6"]  # the ids CUDA_VISIBLE_DEVICES listed
    assert worker_devices(3, []) == [None, None, None]  # CPU machine: leave the variable alone
    with pytest.raises(ConfigError, match="--workers 3 with 2 GPU\\(s\\) each needs 6 GPUs, 4 visible"):
        worker_devices(3, ["0", "1", "2", "3"], per_worker=2)


def test_a_retried_trial_counts_once_in_the_budget():
    trials = [SimpleNamespace(number=0, system_attrs={}), SimpleNamespace(number=1, system_attrs={}),
              SimpleNamespace(number=2, system_attrs={"failed_trial": 0}),
              SimpleNamespace(number=3, system_attrs={"failed_trial": 0})]
    assert budget_used(trials) == 2
    assert budget_used(trials[:2]) == 2 and budget_used([]) == 0


def test_pruners_and_samplers_take_their_optuna_arguments():
    import optuna

    assert isinstance(make_pruner({"name": "none"}), optuna.pruners.NopPruner)
    median = make_pruner({"name": "median", "n_startup_trials": 3, "n_warmup_steps": 2})
    assert isinstance(median, optuna.pruners.MedianPruner) and median._n_startup_trials == 3
    assert isinstance(make_pruner({"name": "hyperband", "min_resource": 1, "reduction_factor": 3}),
                      optuna.pruners.HyperbandPruner)
    with pytest.raises(ConfigError, match="pruner median: .*n_startup"):
        make_pruner({"name": "median", "n_startup": 3})
    tpe = parse_spec(study(sampler={"name": "tpe", "seed": 1, "n_startup_trials": 4}), ROOT / "sweeps")
    assert isinstance(make_sampler(tpe), optuna.samplers.TPESampler)
    bad = parse_spec(study(sampler={"name": "random", "seed": 1, "colour": 4}), ROOT / "sweeps")
    with pytest.raises(ConfigError, match="sampler random: .*colour"):
        make_sampler(bad)


def test_grid_workers_share_one_grid_order_and_tpe_workers_do_not_share_a_seed():
    spec = parse_spec(study(), ROOT / "sweeps")
    assert make_sampler(spec, 0)._all_grids == make_sampler(spec, 1)._all_grids
    spec = parse_spec(study(sampler={"name": "random", "seed": 5}), ROOT / "sweeps")
    a, b = make_sampler(spec, 0), make_sampler(spec, 1)
    assert a._rng.rng.random_sample() != b._rng.rng.random_sample()


@pytest.mark.parametrize("argv,message", [
    (["sweep", "--config", "nowhere.yaml"], "iwae_pl: error: study file 'nowhere.yaml' does not exist"),
    (["sweep", "--config", str(ROOT / "sweeps" / "optuna_mk.yaml"), "--workers", "0"],
     "iwae_pl: error: --workers must be an integer >= 1, got 0"),
])
def test_sweep_misuse_is_one_line_and_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_worker_processes_get_the_sweep_arguments_and_the_trials_arguments_apart():
    argv = _worker_command(["--config", "s.yaml", "--", "--trainer.devices", "2"], 1)
    assert argv[1:] == ["-m", "iwae_pl", "sweep", "--config", "s.yaml", "--worker-index", "1",
                        "--", "--trainer.devices", "2"]
    assert _worker_command(["--config", "s.yaml"], 0)[-2:] == ["--worker-index", "0"]


class _FakeTrial:
    """Records what the pruning callback tells the study."""

    def __init__(self, prune: bool):
        self.prune, self.reports, self.attrs = prune, [], {}

    def report(self, value, step):
        self.reports.append((value, step))

    def should_prune(self):
        return self.prune

    def set_user_attr(self, key, value):
        self.attrs[key] = value


def _fake_trainer(value: float, rank0: bool = True):
    strategy = SimpleNamespace(broadcast=lambda obj, src=0: obj if rank0 else (True, "pruned"))
    return SimpleNamespace(callback_metrics={"val/bound": value}, current_epoch=2, sanity_checking=False,
                           is_global_zero=rank0, strategy=strategy, should_stop=False)


@pytest.mark.parametrize("prune,value,stop,attrs", [
    (False, -90.0, False, {}),
    (True, -90.0, True, {"pruned_at_step": 2}),
    (False, float("nan"), True, {"error": "val/bound is nan at epoch 2"}),  # a NaN fails the trial
])
def test_pruning_callback_reports_and_stops_on_the_decision(monkeypatch, prune, value, stop, attrs):
    from iwae_pl.sweeps import pruning

    monkeypatch.setenv(pruning.ENV_STORAGE, "/nowhere/study.journal")
    monkeypatch.setenv(pruning.ENV_TRIAL, "0")
    monkeypatch.setenv(pruning.ENV_METRIC, "val/bound")
    callback = pruning.SweepPruning()
    callback._trial = trial = _FakeTrial(prune)
    trainer = _fake_trainer(value)
    callback.on_validation_end(trainer, None)
    assert trainer.should_stop is stop and trial.attrs == attrs
    assert trial.reports == ([] if value != value else [(value, 2)])


def test_pruning_callback_on_another_rank_follows_rank_0_without_touching_the_study(monkeypatch):
    from iwae_pl.sweeps import pruning

    monkeypatch.setenv(pruning.ENV_STORAGE, "/nowhere/study.journal")
    monkeypatch.setenv(pruning.ENV_TRIAL, "0")
    callback = pruning.SweepPruning()
    callback._open_trial = lambda: pytest.fail("only rank 0 opens the study")
    trainer = _fake_trainer(-90.0, rank0=False)  # rank 0's broadcast decision: pruned
    callback.on_validation_end(trainer, None)
    assert trainer.should_stop is True


def test_pruning_callback_without_a_sweep_is_a_plain_run(monkeypatch):
    from iwae_pl.sweeps import pruning

    monkeypatch.delenv(pruning.ENV_STORAGE, raising=False)
    callback = pruning.SweepPruning()
    trainer = _fake_trainer(float("nan"))
    callback.on_validation_end(trainer, None)
    assert not callback.enabled and trainer.should_stop is False
