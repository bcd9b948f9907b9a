"""What the DDP tests run, alike with 1 process (imported, ``main(out, ckpt)``) and with 2 (under
``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_script.py OUT CKPT``):

1. ``noise``: fit 2 steps of a tiny IWAE and record each rank's training noise of the first batch;
2. ``grads``: one step of iwae and of piwae/dreg with noise fixed per data point on 8 fixed points
   (2 processes: 4 each), recording the gradient after DDP's all-reduce;
3. ``validate``, ``test``, ``predict`` of the checkpoint CKPT on the first 101 points (eval batch 10, so
   the two processes even run different numbers of batches), with the activity counts and pruning check.

Rank 0 writes ``OUT/results.pt``; every rank writes ``OUT/noise_rank{r}.pt``. Not collected by pytest.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from iwae_pl.callbacks import ActivityStats
from iwae_pl.data.datamodule import BinarizedDataModule, BinaryDataset, identity_collate
from iwae_pl.lightning.module import PREDICTIONS_FILE, IWAEModule
from iwae_pl.model.noise import indexed_normal

LAYERS = [{"latent": 4, "hidden": [16]}, {"latent": 3, "hidden": [8]}]
N_EVAL = 101


class RecordNoise(IWAEModule):
    """Keeps the training noise of its first batch, and per step this process's own mean bound and the
    logged ``train/bound`` (which should be the mean over processes)."""

    def training_noise(self, x, batch_idx):
        eps = super().training_noise(x, batch_idx)
        if not hasattr(self, "first_noise"):
            self.first_noise = [e.detach().cpu().clone() for e in eps]
            self.local_bounds, self.logged_bounds = [], []
        return eps

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.local_bounds.append(self.objective.bound(out["log_w"]).mean().item())
        return out

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.logged_bounds.append(float(self.trainer.callback_metrics["train/bound"]))


class FixedNoise(IWAEModule):
    """Training noise fixed per data point (as evaluation noise), so 1 and 2 processes see the same
    samples of the same points; keeps the (all-reduced) gradient of the first step."""

    def training_step(self, batch, batch_idx):
        x, index = batch
        M, K = self.objective.sample_shape
        eps = [e.view(M, K, *e.shape[1:]) for e in indexed_normal(3, index, 0, M * K, self.net.latent_sizes)]
        return -self.objective.estimate(self.net, x, eps=eps).surrogate.mean()

    def on_after_backward(self):
        if not hasattr(self, "grads"):
            self.grads = {n: p.grad.detach().clone() for n, p in self.net.named_parameters()}


class FixedPoints(pl.LightningDataModule):
    """8 fixed binary digits, in order (under DDP Lightning's sampler gives rank r points r, r + 2, ...)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.x = BinarizedDataModule("digits").val_dataloader().dataset.data[:8]

    def train_dataloader(self):
        return DataLoader(BinaryDataset(self.x), batch_size=self.batch_size, collate_fn=identity_collate)


class Metrics(Callback):
    """The stage's final metrics (``callback_metrics`` after the epoch, the same on every rank)."""

    def __init__(self):
        self.metrics = {}

    def _grab(self, trainer):
        self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    on_validation_end = on_test_end = lambda self, trainer, pl_module: self._grab(trainer)  # noqa: E731


def trainer(out: Path, devices: int, name: str, callbacks=(), **kw) -> pl.Trainer:
    strategy = "ddp" if devices > 1 else "auto"
    return pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=CSVLogger(out, name=name),
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      num_sanity_val_steps=0, callbacks=list(callbacks), **kw)


def main(out: str | Path, ckpt: str | Path) -> None:
    out = Path(out)
    torch.set_num_threads(1)
    results = {}

    pl.seed_everything(0, verbose=False)
    noise_module = RecordNoise(input_dim=64, layers=LAYERS, K=3, val_k=0)
    world = int(os.environ.get("WORLD_SIZE", 1))  # torchrun sets it; Lightning then uses its processes
    t = trainer(out, world, "noise", max_steps=2, limit_val_batches=0, log_every_n_steps=1)
    t.fit(noise_module, datamodule=BinarizedDataModule("digits", batch_size=10))
    torch.save({"noise": noise_module.first_noise, "local_bounds": noise_module.local_bounds,
                "logged_bounds": noise_module.logged_bounds}, out / f"noise_rank{t.global_rank}.pt")

    grads = {}
    for name, kw in {"iwae": dict(objective="iwae", K=4), "piwae_dreg": dict(objective="piwae", M=2, K=3,
                                                                            estimator="dreg")}.items():
        pl.seed_everything(0, verbose=False)
        module = FixedNoise(input_dim=64, layers=LAYERS, val_k=0, init_visible_bias=False, **kw)
        t = trainer(out, world, f"grads_{name}", max_steps=1, limit_val_batches=0)
        t.fit(module, datamodule=FixedPoints(batch_size=8 // world))
        grads[name] = module.grads
    results["grads"] = grads

    data = BinarizedDataModule("digits", eval_batch_size=10, limit_val=N_EVAL, limit_test=N_EVAL,
                               limit_predict=N_EVAL)
    for stage in ("validate", "test"):
        metrics = Metrics()
        activity = ActivityStats(num_examples=500, source="val", prune_check_k=64,
                                 prune_check_stages=("test", "validate"), batch_size=16)
        t = trainer(out, world, stage, callbacks=[metrics, activity])
        module = IWAEModule.load_from_checkpoint(ckpt)
        getattr(t, stage)(module, datamodule=data)
        results[stage] = metrics.metrics
        results[f"{stage}_activity"] = [a.cpu() for a in activity.activity]
    t = trainer(out, world, "predict")
    t.predict(IWAEModule.load_from_checkpoint(ckpt), datamodule=data)
    results["predictions"] = str(Path(t.log_dir) / PREDICTIONS_FILE)
    results["world"] = t.world_size
    if t.is_global_zero:
        torch.save(results, out / "results.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
