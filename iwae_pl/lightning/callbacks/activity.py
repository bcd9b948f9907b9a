"""Active units (Burda et al. 2015, section 5.3 of the reproduction report).

The activity of unit u of a stochastic layer is A_u = Var_x( E_q[u | x] ): the variance over data
points of the unit's posterior mean. A unit is active when A_u > 1e-2. Burda et al. computed it on
the first 500 training examples, feeding layer l > 1 a *sample* of layer l - 1; they also checked
that removing the inactive units changes the test log-likelihood by less than 0.06 nats.

``ActivityStats`` reports both, DDP-correct: each process takes every world_size-th example of the
fixed set, and A_u comes from the per-unit count / sum / sum of squares summed over processes, so
it is the variance over the whole set, identical to a one-process run on the same examples.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from ...diagnostics.activity import activity_from_moments, posterior_mean_moments, unit_activity  # noqa: F401
from ...diagnostics.figures import histogram_figure
from ...errors import check_choice, check_float, check_int
from ...model.likelihood import log_likelihood
from ..metrics import Sums
from ._common import SOURCES, epoch_due, fixed_examples, log_global, shard, sums
from ._figures import figure_title, log_histogram, save_figure

PROPAGATE = ("sample", "mean")
PRUNE_STAGES = ("test", "validate")


class ActivityStats(Callback):
    """Counts active units per stochastic layer and (optionally) checks that pruning them is harmless.

    Logged every ``every_n_epochs`` training epochs (and at the end of ``test``):
    ``active/layer{i}`` (i = 1 next to x), ``active/total``; a histogram of log10 A_u per layer to
    TensorBoard / W&B as ``active/log10_A_layer{i}``; and ``<log_dir>/figures/activity_epoch{E}.png``
    (``activity_test.png`` in test): one panel per layer, the threshold dashed.

    Pruning check (``prune_check_k > 0``): during ``test`` (and ``validate`` / validation epochs if listed
    in ``prune_check_stages``) every batch's L_k is computed twice on the same noise, with the inactive
    units pruned (``keep=`` masks) and with all units; logged as ``active/nll_pruned``, ``active/nll_all``.

    Args:
        every_n_epochs: training epochs between measurements (also measured after the last epoch).
        num_examples: size of the fixed set (the first examples of ``source``; Burda: 500 training ones).
        source: ``val`` (default), ``train`` (binarized once with ``seed``) or ``test``.
        threshold: A_u above which a unit is active (1e-2).
        propagate: what layer l > 1 is fed: ``sample`` (one seeded sample of layer l - 1, Burda) or
            ``mean`` (the mean of layer l - 1; a deterministic variant that counts more units active
            in the upper layers when the lower posterior is wide).
        prune_check_k: samples per data point of the pruning check's L_k (0 = off; 5000 in Burda).
        prune_check_stages: stages that run the check: ``test`` and/or ``validate`` (every validation).
        seed: seeds the training-set binarization and the samples of ``propagate="sample"``.
        batch_size: examples per forward pass.
    """

    def __init__(self, every_n_epochs: int = 1, num_examples: int = 500, source: str = "val",
                 threshold: float = 1e-2, propagate: str = "sample", prune_check_k: int = 0,
                 prune_check_stages: Sequence[str] = ("test",), seed: int = 0, batch_size: int = 500):
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs)
        self.num_examples = check_int("num_examples", num_examples, 2)
        self.source = check_choice("activity source", source, SOURCES)
        self.threshold = check_float("activity threshold", threshold, 0.0, low_open=True)
        self.propagate = check_choice("propagate", propagate, PROPAGATE)
        self.prune_check_k = check_int("prune_check_k", prune_check_k, 0)
        self.prune_check_stages = tuple(check_choice("prune check stage", s, PRUNE_STAGES)
                                        for s in prune_check_stages)
        self.seed = check_int("seed", seed, 0)
        self.batch_size = check_int("batch_size", batch_size)
        self.activity: list[Tensor] | None = None  # the latest A_u per layer, [d_l] (on every process)
        self.examples = 0  # size of the fixed set the latest A_u was computed on
        self._keep: list[Tensor] | None = None
        self._nll: Sums | None = None  # running (count, sum -L_k pruned, sum -L_k all), reduced at the end

    # --- measurement ------------------------------------------------------------------------------
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[Tensor]:
        """A_u per layer over the fixed set, gathered across processes (every process gets the result)."""
        net = pl_module.net
        x, index = fixed_examples(trainer, self.source, self.num_examples, self.seed)
        self.examples = len(x)  # the whole set's size (a split may hold fewer than num_examples)
        x, index = shard(x, index, trainer)
        param = next(net.parameters())
        was_training = net.training
        net.eval()
        try:
            moments = posterior_mean_moments(net, x.to(param), index, self.propagate, self.seed,
                                             self.batch_size)
        finally:
            net.train(was_training)
        totals = sums(pl_module, {f"layer{i}": m for i, m in enumerate(moments)}).compute()
        self.activity = activity_from_moments([totals[f"layer{i}"] for i in range(len(moments))])
        return self.activity

    def _measure_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, tag: str,
                         activity: list[Tensor] | None = None) -> list[Tensor]:
        """Log (and plot) A_u; ``activity``: already computed with the current parameters."""
        activity = self.compute(trainer, pl_module) if activity is None else activity
        counts = [int((a > self.threshold).sum()) for a in activity]
        per_layer = {f"active/layer{i}": c for i, c in enumerate(counts, 1)}
        log_global(pl_module, {**per_layer, "active/total": sum(counts)})
        if trainer.is_global_zero:
            self._plot(trainer, pl_module, activity, counts, tag)
        return activity

    def _plot(self, trainer: pl.Trainer, pl_module: pl.LightningModule, activity: list[Tensor],
              counts: list[int], tag: str) -> None:
        panels = []
        log_a = [a.clamp_min(1e-30).log10().cpu().numpy() for a in activity]
        lo = min(-6.0, np.floor(min(v.min() for v in log_a)))
        hi = max(1.0, np.ceil(max(v.max() for v in log_a)))
        edges = np.linspace(lo, hi, 41)
        for i, (v, c) in enumerate(zip(log_a, counts), 1):
            hist, _ = np.histogram(np.clip(v, lo, hi), edges)
            log_histogram(trainer, f"active/log10_A_layer{i}", hist, edges)
            panels.append((f"layer {i}: {c}/{len(v)} active", hist, edges))
        what = f"activity A_u over {self.examples} {self.source} examples"
        title = figure_title(trainer, pl_module, what, "test" if tag == "test" else None)
        fig = histogram_figure(panels, r"$\log_{10} A_u$ (dashed: threshold)", title,
                               threshold=float(np.log10(self.threshold)), ylabel="units")
        save_figure(trainer, fig, f"activity_{tag}")

    # --- hooks: measurement -----------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if epoch_due(trainer, self.every_n_epochs):
            self._measure_and_log(trainer, pl_module, f"epoch{trainer.current_epoch:04d}")

    # --- hooks: pruning check ---------------------------------------------------------------------
    def _checks(self, trainer: pl.Trainer, stage: str) -> bool:
        return self.prune_check_k > 0 and stage in self.prune_check_stages and not trainer.sanity_checking

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._keep, self._nll = None, None
        if self._checks(trainer, stage):
            self._keep = [a > self.threshold for a in self.compute(trainer, pl_module)]  # on the model's device
            self._nll = Sums({"nll": (3,)}).to(pl_module.device)

    def _batch(self, pl_module: pl.LightningModule, batch) -> None:
        if self._keep is None:
            return
        x, index = batch
        hp = pl_module.hparams
        kw = dict(seed=hp.get("eval_seed", 0), chunk=hp.get("eval_chunk", None))
        pruned = log_likelihood(pl_module.net, x, index, self.prune_check_k, keep=self._keep, **kw)
        full = log_likelihood(pl_module.net, x, index, self.prune_check_k, **kw)
        self._nll.update(nll=torch.stack([torch.tensor(float(len(x)), dtype=torch.float64),
                                          -pruned.double().sum().cpu(), -full.double().sum().cpu()]))

    def _end(self, pl_module: pl.LightningModule) -> None:
        if self._nll is None:
            return
        n, pruned, full = self._nll.compute()["nll"].tolist()
        log_global(pl_module, {"active/nll_pruned": pruned / n, "active/nll_all": full / n})
        self._keep, self._nll = None, None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "validate")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0) -> None:
        self._batch(pl_module, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch(pl_module, batch)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        checked = self._nll is not None  # A_u was computed at the start of this test, same parameters
        self._end(pl_module)
        self._measure_and_log(trainer, pl_module, "test", self.activity if checked else None)
