"""Test-only callbacks that break a run on purpose (configs name them as ``faults.KillAt`` etc.;
the tests put this directory on PYTHONPATH)."""
from __future__ import annotations

import os
import signal

import torch
from pytorch_lightning.callbacks import Callback


class KillAt(Callback):
    """SIGKILL this process when a training batch starts at ``step`` (only in a run that is not resumed)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.ckpt_path is None and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class Poison(Callback):
    """Make the run non-finite at ``step``: a NaN parameter (``what: param``) before the batch, or a NaN
    gradient (``what: grad``) after the backward pass."""

    def __init__(self, step: int, what: str = "param") -> None:
        self.step, self.what = step, what

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.what == "param" and trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.net.parameters()).view(-1)[0] = float("nan")

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.what == "grad" and trainer.global_step == self.step:
            next(pl_module.net.parameters()).grad.view(-1)[0] = float("nan")


class NaNPoints(Callback):
    """Make the evaluation L_k NaN for the data points with these indices, in every process."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def setup(self, trainer, pl_module, stage) -> None:
        exact, bad = pl_module.log_likelihood, torch.tensor(self.indices)

        def some_nan(x, index, k):
            values = exact(x, index, k)
            return torch.where(torch.isin(index, bad.to(index.device)), torch.full_like(values, float("nan")), values)

        pl_module.log_likelihood = some_nan
