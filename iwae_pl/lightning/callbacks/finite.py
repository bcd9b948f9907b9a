"""Non-finite values stop a run (or, if asked, skip the step): nothing trains on, or saves, a NaN.

``FiniteGuard`` (always on; settings under ``non_finite:`` in a config) checks, before every optimizer
step, the loss and the gradients of the step; and after every validation, the validation metrics.

- ``action: stop`` (default): a NaN/inf loss or gradient raises ``NonFiniteError`` *before* the optimizer
  applies it, with one line naming the step, the objective and the value; the CLI prints it and exits
  with code 3. The last checkpoint (written only from finite states) is the last good state.
- ``action: skip``: the step's gradients are dropped (Adam leaves the parameters and moments alone), the
  step is counted (``nonfinite/skipped_steps``, logged at every epoch end) and training goes on; more than ``max_skips``
  skipped steps stop the run as ``stop`` would.

A validation metric that saw a non-finite point is NaN (the module never averages over the finite points
only) and stops the run in both modes: the model itself produced it.
"""
from __future__ import annotations

import torch
from pytorch_lightning.callbacks import Callback

from ...errors import check_choice, check_int

ACTIONS = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """Training met a NaN/inf (loss, gradient or evaluation metric); the message is one line."""


def describe_objective(pl_module) -> str:
    """``iwae(M=1, K=5)`` from the module's settings."""
    hp = getattr(pl_module, "hparams", {})
    return f"{hp.get('objective', '?')}(M={hp.get('M', '?')}, K={hp.get('K', '?')})"


class FiniteGuard(Callback):
    """Stop (or skip the step) when a loss or gradient is not finite; see the module docstring.

    Args:
        action: ``stop`` or ``skip``.
        max_skips: with ``skip``, how many steps may be skipped before the run stops.
    """

    def __init__(self, action: str = "stop", max_skips: int = 100) -> None:
        self.action = check_choice("non_finite.action", action, ACTIONS)
        self.max_skips = check_int("non_finite.max_skips", max_skips, 0)
        self.skipped = 0
        self._loss: torch.Tensor | None = None

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # One host sync per step: a norm is non-finite iff some entry is (or the sum of squares overflows).
        checks = [self._loss.reshape(1)] if self._loss is not None else []
        if grads:
            checks.append(torch.stack(torch._foreach_norm(grads)).to(checks[0].dtype if checks else grads[0].dtype))
        if not checks or bool(torch.isfinite(torch.cat(checks)).all()):
            return
        what = self._culprit(pl_module, optimizer)
        step = trainer.global_step
        where = f"step {step} (epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx})"
        if self.action == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            return
        limit = f" after {self.skipped} skipped steps (max_skips {self.max_skips})" if self.action == "skip" else ""
        raise NonFiniteError(f"training stopped at {where}: {what} is not finite, objective "
                             f"{describe_objective(pl_module)}{limit}; {self._last_good(trainer)}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.action == "skip":  # the running count, once an epoch
            pl_module.log("nonfinite/skipped_steps", float(self.skipped))

    def _culprit(self, pl_module, optimizer) -> str:
        loss = self._loss
        if loss is not None and not bool(torch.isfinite(loss).all()):
            return f"the loss (-surrogate bound) = {float(loss):g}"
        names = {id(p): n for n, p in pl_module.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                    return f"the gradient of {names.get(id(p), '?')}"
        return "a gradient"

    @staticmethod
    def _last_good(trainer) -> str:
        """What the run's checkpointing callback says of the last good state (``last_good()``: the
        runs package's LastCheckpoint, which builds on this module, so it is found by that method)."""
        said = next((cb.last_good() for cb in trainer.callbacks if callable(getattr(cb, "last_good", None))), None)
        return said or "no checkpoint was written before it"

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn != "fit":
            return  # `validate` reports it itself, after recording the metrics
        counts = getattr(pl_module, "nonfinite_points", lambda stage: {})("val")
        if not counts:
            return
        what = ", ".join(f"{name} ({n} points non-finite)" for name, n in sorted(counts.items()))
        stage = "sanity check" if trainer.sanity_checking else f"validation at epoch {trainer.current_epoch}"
        raise NonFiniteError(f"training stopped at {stage}, step {trainer.global_step}: {what} is not finite, "
                             f"objective {describe_objective(pl_module)}; {self._last_good(trainer)}")
