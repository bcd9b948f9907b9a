"""Pruning a sweep trial during training, correct under DDP.

A trial runs as its own ``python -m iwae_pl fit`` process (possibly several DDP ranks). The driver
tells it which study and trial it is through environment variables (inherited by every DDP rank);
``SweepPruning`` in ``trainer.callbacks`` then, at the end of each validation:

1. rank 0 reports the validation metric to the trial in the study's storage and asks the study's
   pruner whether to stop;
2. the decision is broadcast from rank 0 (``trainer.strategy.broadcast``), so every rank sets
   ``trainer.should_stop`` at the same validation and they stop together;
3. rank 0 marks the trial with the user attribute ``pruned_at_step``; the driver, seeing it when the
   process has ended, finishes the trial as PRUNED.

Without those variables (a trial's ``config.yaml`` re-run alone) the callback does nothing, so the
saved config stays an ordinary run. optuna-integration's ``PyTorchLightningPruningCallback`` is not
used: it imports the separate ``lightning`` package, not ``pytorch_lightning``, and supports DDP only
with RDB storage, while this works with the journal file too.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import pytorch_lightning as pl

ENV_STORAGE = "IWAE_PL_SWEEP_STORAGE"   # journal file path or RDB URL
ENV_STUDY = "IWAE_PL_SWEEP_STUDY"       # study name
ENV_TRIAL = "IWAE_PL_SWEEP_TRIAL"       # trial number
ENV_METRIC = "IWAE_PL_SWEEP_METRIC"     # the metric reported, e.g. val/bound
ENV_PRUNER = "IWAE_PL_SWEEP_PRUNER"     # the pruner block of the study file, as JSON
PRUNED_ATTR = "pruned_at_step"
ERROR_ATTR = "error"


def open_storage(address: str, heartbeat: dict | None = None):
    """An Optuna storage from a journal file path or an RDB URL (``scheme://...``).

    With ``heartbeat`` ({interval, grace_period, max_retry}) an RDB storage records heartbeats and a
    stale trial (its worker died) becomes FAIL and is queued again with the same parameters.
    """
    import optuna

    if "://" not in address:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(address))
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = dict(heartbeat_interval=int(heartbeat["interval"]), grace_period=int(heartbeat["grace_period"]),
                      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                          max_retry=heartbeat.get("max_retry")))
    return optuna.storages.RDBStorage(address, engine_kwargs={"pool_pre_ping": True}, **kwargs)


def make_pruner(block: dict):
    """An Optuna pruner from a study file's pruner block: ``{name: median, n_startup_trials: 2, ...}``."""
    import optuna

    from ..errors import ConfigError

    args = {k: v for k, v in block.items() if k != "name"}
    name = block.get("name", "none")
    cls = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner}.get(name)
    if cls is None:
        return optuna.pruners.NopPruner()
    try:
        return cls(**args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pruner {name}: {err}") from None


class SweepPruning(pl.Callback):
    """Report the validation metric to the sweep's trial and stop all ranks together when pruned.

    Reads the study, trial and metric from the ``IWAE_PL_SWEEP_*`` environment variables that the
    sweep driver sets; a no-op when they are absent.
    """

    def __init__(self) -> None:
        self.address = os.environ.get(ENV_STORAGE)
        self.enabled = bool(self.address and os.environ.get(ENV_TRIAL))
        self._trial = None

    def _open_trial(self):
        import optuna

        storage = open_storage(self.address)
        pruner = make_pruner(json.loads(os.environ.get(ENV_PRUNER, "{}")))
        study = optuna.load_study(study_name=os.environ[ENV_STUDY], storage=storage, pruner=pruner)
        number = int(os.environ[ENV_TRIAL])
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        return optuna.trial.Trial(study, frozen._trial_id)

    def _decide(self, trainer: pl.Trainer) -> tuple[bool, str]:
        """Rank 0 only: report this validation's metric; (stop?, why)."""
        if self._trial is None:
            self._trial = self._open_trial()
        metric = os.environ.get(ENV_METRIC, "val/bound")
        value = trainer.callback_metrics.get(metric)
        if value is None:
            return False, ""
        value = float(value)
        step = trainer.current_epoch
        if not math.isfinite(value):
            self._trial.set_user_attr(ERROR_ATTR, f"{metric} is {value} at epoch {step}")
            return True, "error"
        self._trial.report(value, step)
        if self._trial.should_prune():
            self._trial.set_user_attr(PRUNED_ATTR, step)
            return True, "pruned"
        return False, ""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        decision = self._decide(trainer) if trainer.is_global_zero else None
        stop, why = trainer.strategy.broadcast(decision, src=0)
        if stop:
            trainer.should_stop = True
