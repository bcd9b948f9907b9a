"""BetaWarmup: schedule values, per-epoch / per-step updates in a real Trainer, resume, and that beta
reaches the training loss but not evaluation."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from iwae_pl import ConfigError
from iwae_pl.callbacks import BetaWarmup

from test_callbacks_common import digits, logged, make_trainer, tiny_module, single_thread  # noqa: F401


class Recorder(Callback):
    """Records (epoch, global_step, warmup_beta) at every training batch, and the step outputs."""

    def __init__(self):
        self.betas: list[tuple[int, int, float]] = []
        self.outputs: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.betas.append((trainer.current_epoch, trainer.global_step, pl_module.warmup_beta))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.outputs.append({k: v.detach().clone() for k, v in outputs.items()})


@pytest.mark.parametrize("schedule,expected", [
    ("linear", [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
    ("cosine", [0.0, (1 - math.cos(math.pi / 4)) / 2, 0.5, (1 - math.cos(3 * math.pi / 4)) / 2, 1.0, 1.0]),
    ("constant", [0.0] * 6),
])
def test_schedule_values(schedule, expected):
    w = BetaWarmup(schedule, epochs=4)
    assert [w.beta_at(e / 4) for e in range(6)] == pytest.approx(expected, abs=1e-12)


def test_sigmoid_schedule_and_start_end():
    w = BetaWarmup("sigmoid", start=0.2, end=1.0, epochs=10, steepness=10.0)
    s = lambda u: 1 / (1 + math.exp(-10 * (u - 0.5)))  # noqa: E731
    assert w.beta_at(0.0) == pytest.approx(0.2) and w.beta_at(1.0) == pytest.approx(1.0)
    assert w.beta_at(0.5) == pytest.approx(0.6)
    assert w.beta_at(0.3) == pytest.approx(0.2 + 0.8 * (s(0.3) - s(0)) / (s(1) - s(0)))
    values = [w.beta_at(p / 20) for p in range(21)]
    assert values == sorted(values)
    assert BetaWarmup("constant", start=0.3, epochs=5).beta_at(0.7) == 0.3
    down = BetaWarmup("linear", start=1.0, end=0.5, steps=10)      # any direction is allowed
    assert down.beta_at(0.5) == pytest.approx(0.75)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(schedule="exp"), "unknown warm-up schedule 'exp'; allowed: linear, sigmoid, cosine, constant"),
    (dict(start=-0.1), "warm-up start must be a finite number in [0.0, inf], got -0.1"),
    (dict(epochs=10, steps=100), "not both"),
    (dict(steps=0), "warm-up steps must be an integer >= 1, got 0"),
    (dict(epochs=2.5), "warm-up epochs must be an integer >= 1, got 2.5"),
    (dict(steps=100, interval="epoch"), "interval 'epoch' needs the length in epochs"),
    (dict(interval="batch"), "unknown warm-up interval 'batch'"),
])
def test_bad_settings_are_config_errors(kwargs, needle):
    with pytest.raises(ConfigError) as err:
        BetaWarmup(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_defaults_are_soenderby():
    w = BetaWarmup()
    settings = (w.schedule, w.start, w.end, w.epochs, w.steps, w.interval)
    assert settings == ("linear", 0.0, 1.0, 200, None, "epoch")
    assert BetaWarmup(steps=50).interval == "step"


def test_per_epoch_and_per_step_in_a_trainer(tmp_path):
    rec = Recorder()
    trainer = make_trainer(tmp_path, [BetaWarmup(epochs=2), rec], max_epochs=4, limit_train_batches=3,
                           limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(tiny_module(), datamodule=digits())
    assert [b for _, _, b in rec.betas] == [0.0] * 3 + [0.5] * 3 + [1.0] * 6
    assert logged(trainer, "warmup/beta") == [0.0, 0.5, 1.0, 1.0]          # one value per epoch

    rec = Recorder()
    trainer = make_trainer(tmp_path, [BetaWarmup("linear", steps=4), rec], max_epochs=2,
                           limit_train_batches=3, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(tiny_module(), datamodule=digits())
    assert [b for _, _, b in rec.betas] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert logged(trainer, "warmup/beta") == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])

    rec = Recorder()   # per step, length in epochs: fractional epochs
    trainer = make_trainer(tmp_path, [BetaWarmup("linear", epochs=2, interval="step"), rec], max_epochs=2,
                           limit_train_batches=4, limit_val_batches=0)
    trainer.fit(tiny_module(), datamodule=digits())
    assert [b for _, _, b in rec.betas] == pytest.approx([i / 8 for i in range(8)])


def test_resume_continues_the_schedule(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(tmp_path, [BetaWarmup(epochs=4), ckpt], max_epochs=2, limit_train_batches=2,
                           limit_val_batches=0, enable_checkpointing=True)
    trainer.fit(tiny_module(), datamodule=digits())
    rec = Recorder()
    module = tiny_module(warmup_beta=1.0)  # a fresh module: its initial beta must not leak into the schedule
    trainer = make_trainer(tmp_path, [BetaWarmup(epochs=4), rec], max_epochs=4, limit_train_batches=2,
                           limit_val_batches=0)
    trainer.fit(module, datamodule=digits(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert rec.betas == [(2, 4, 0.5), (2, 5, 0.5), (3, 6, 0.75), (3, 7, 0.75)]


def test_beta_reaches_the_training_loss_but_not_evaluation(tmp_path):
    def first_step(beta):
        rec = Recorder()
        pl.seed_everything(7)
        trainer = make_trainer(tmp_path, [BetaWarmup("constant", start=beta, epochs=1), rec], max_steps=1,
                               limit_val_batches=0)
        trainer.fit(tiny_module(K=4), datamodule=digits())
        return rec.outputs[0]

    at0, at1 = first_step(0.0), first_step(1.0)
    assert abs(at0["loss"].item() - at1["loss"].item()) > 1e-2       # beta changes the training loss
    torch.testing.assert_close(at0["log_w"], at1["log_w"])           # same noise, reported at beta = 1

    module = tiny_module()
    results = []
    for beta in (0.0, 0.3, 1.0):
        module.warmup_beta = beta
        trainer = make_trainer(tmp_path, [BetaWarmup(epochs=2)])
        results.append(trainer.validate(module, datamodule=digits(), verbose=False)[0])
        results.append(trainer.test(module, datamodule=digits(), verbose=False)[0])
    assert results[0]["val/nll"] > 0 and results[1]["test/bound"] < 0
    for other in results[2:]:
        ref = results[0] if "val/nll" in other else results[1]
        assert other == ref
