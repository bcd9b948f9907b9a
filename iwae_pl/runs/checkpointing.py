"""The last checkpoint of a run, written so that a killed run continues exactly, and finding it again.

``LastCheckpoint`` (always on; settings under ``last_checkpoint:`` in a config) writes
``<run_dir>/checkpoints/last.ckpt`` at the end of every training epoch and, with ``every_n_steps``, every
N optimizer steps:

- **atomically**: into a temporary file in the same directory, flushed to disk, then renamed over the
  old one (a kill or a full disk leaves the previous checkpoint, never half a file);
- **only when finite**: a state with a NaN/inf parameter or optimizer moment never replaces it;
- **complete**: besides what Lightning saves (weights, optimizer, schedule, loop counters, callback and
  datamodule state: shuffle position and binarization stream), the RNG states (torch, CUDA, numpy,
  Python) and the number of ``metrics.csv`` rows written up to that state.

The state is taken at the points Lightning can resume from (after a training batch, at the end of an
epoch) and written just before the next optimizer step, after the logger has flushed that state's
metrics rows, so the rows on disk and the checkpoint always agree. Resuming (``fit --ckpt_path last``,
see :func:`find_last_checkpoint`) reuses the run directory and keeps exactly those rows of metrics.csv.
"""
from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_warn

from ..lightning.loggers import run_directory
from ..errors import ConfigError, check_int
from .preflight import setting

FILENAME = "last.ckpt"
RESUME_KEY = "iwae_pl_resume"  # checkpoint entry: {"rng": ..., "metrics_rows": int}
_VERSION = re.compile(r"version_(\d+)$")


# ---------------------------------------------------------------------------------------------- RNG state

def rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain Python values (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------- writing

def atomic_save(checkpoint: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` into a temporary file next to ``path``, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def first_nonfinite(checkpoint: dict[str, Any]) -> str | None:
    """Name of the first floating tensor with a NaN/inf among the weights and optimizer states, or None."""
    def tensors(prefix: str, obj: Any):
        if isinstance(obj, torch.Tensor):
            yield prefix, obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from tensors(f"{prefix}.{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from tensors(f"{prefix}[{i}]", v)

    for root in ("state_dict", "optimizer_states"):
        for name, t in tensors(root, checkpoint.get(root, {})):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return name
    return None


def count_rows(path: Path) -> int:
    """Data rows of a CSV file (lines after the header); 0 if it does not exist."""
    if not path.is_file():
        return 0
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
    return max(lines - 1, 0)


class LastCheckpoint(Callback):
    """Write ``<run_dir>/checkpoints/last.ckpt`` every epoch and every ``every_n_steps`` steps (see module).

    Args:
        every_n_steps: also write it every N optimizer steps (None: at epoch ends only). Mid-epoch
            checkpoints make a kill lose at most N steps; a resumed run continues the epoch exactly.

    It takes over ``last.ckpt`` from any ``ModelCheckpoint(save_last=True)`` (whose last is written only
    when that callback saves, e.g. when ``val/nll`` improves).
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        self.every_n_steps = None if every_n_steps is None else check_int("last_checkpoint.every_n_steps",
                                                                           every_n_steps, 1)
        self.path: Path | None = None
        self._pending: dict[str, Any] | None = None
        self._rng_to_restore: dict[str, Any] | None = None
        self._old_rows: tuple[list[str], list[str]] | None = None  # (header line, data lines) before resuming
        self._keep_rows: int | None = None
        self.refused_step: int | None = None  # the last state not written because it was not finite

    # --- set-up -----------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        run_dir = Path(trainer.strategy.broadcast(run_directory(trainer)))  # rank 0's (W&B ids differ per rank)
        self.path = run_dir / "checkpoints" / FILENAME
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.save_last:
                cb.save_last = None  # this callback writes last.ckpt, at every epoch

    def keep_metrics(self, trainer: pl.Trainer) -> None:
        """Before ``trainer.fit`` resumes in an existing run directory: hold its metrics.csv (Lightning's CSV
        logger deletes it when it opens the directory, before any callback runs); the rows the checkpoint
        counts are written back when training starts. The CLI calls this."""
        metrics = self._metrics_file(trainer)
        if metrics is not None and metrics.is_file():
            lines = metrics.read_text().splitlines(keepends=True)
            if lines:
                self._old_rows = (lines[0], lines[1:])

    @staticmethod
    def _metrics_file(trainer: pl.Trainer) -> Path | None:
        logger = trainer.logger
        return Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None

    # --- what every checkpoint carries ----------------------------------------------------------------
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[RESUME_KEY] = {"rng": rng_state()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != "fit":
            return
        saved = checkpoint.get(RESUME_KEY, {})
        self._rng_to_restore = saved.get("rng")
        self._keep_rows = saved.get("metrics_rows")
        if self._keep_rows is None and self._old_rows is not None:  # a checkpoint written by another callback
            step = checkpoint.get("global_step", 0)
            header = self._old_rows[0].rstrip("\r\n").split(",")
            col = header.index("step") if "step" in header else None
            self._keep_rows = sum(1 for line in self._old_rows[1]
                                  if col is None or int(float(line.split(",")[col] or 0)) < step)

    def on_train_start(self, trainer, pl_module) -> None:
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        if trainer.datamodule is not None and getattr(trainer.datamodule, "num_workers", 0) and trainer.ckpt_path:
            rank_zero_warn("resuming with data.num_workers > 0: the workers' binarization streams restart, so "
                           "the continuation is not exact (it is with num_workers: 0)")
        self._restore_metrics(trainer)

    def _restore_metrics(self, trainer: pl.Trainer) -> None:
        """Put back the rows of metrics.csv the checkpoint's state had written (the CSV logger deletes
        the file when it opens a directory that has one) and drop rows written after that state."""
        if self._old_rows is None or not trainer.is_global_zero:
            return
        header, rows = self._old_rows
        keep = rows[: len(rows) if self._keep_rows is None else self._keep_rows]
        writer = trainer.logger.experiment  # created now if not yet: it has deleted the old file
        path = Path(writer.metrics_file_path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(header + "".join(keep))
        os.replace(tmp, path)
        writer.metrics_keys = header.rstrip("\r\n").split(",")
        self._old_rows = None

    def last_good(self) -> str | None:
        """For the NaN guard's message: where the last good state is and the state refused, if any;
        None before the first checkpoint."""
        if self.path is None or not self.path.is_file():
            return None
        refused = f"; the step-{self.refused_step} state was not finite and was not written" \
            if self.refused_step is not None else ""
        return f"last good checkpoint: {self.path}{refused}"

    # --- when ---------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps is None or trainer.global_step % self.every_n_steps:
            return
        # The epoch-end checkpoint covers the last batch; a batch followed by validation is left out
        # (Lightning resumes it as if validation had run).
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        val_every = trainer.val_check_batch
        if isinstance(val_every, int) and trainer.check_val_every_n_epoch is None and (batch_idx + 1) % val_every == 0:
            return
        self._capture(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._capture(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._commit(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._commit(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._commit(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._pending = None  # a failed step's state is never written

    # --- how -------------------------------------------------------------------------------------------
    def _capture(self, trainer: pl.Trainer) -> None:
        # Tensors in the dict share storage with the live ones: it is written before the next optimizer step.
        self._pending = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)

    def _commit(self, trainer: pl.Trainer) -> None:
        checkpoint, self._pending = self._pending, None
        if checkpoint is None or self.path is None:
            return
        if first_nonfinite(checkpoint) is not None:  # FiniteGuard's message reports it
            self.refused_step = checkpoint.get("global_step")
            return
        for logger in trainer.loggers:
            logger.save()  # the rows of this state reach the disk before the checkpoint that counts them
        metrics = self._metrics_file(trainer)
        checkpoint.setdefault(RESUME_KEY, {})["metrics_rows"] = count_rows(metrics) if metrics else None
        if trainer.is_global_zero:
            atomic_save(checkpoint, self.path)
        trainer.strategy.barrier("last_checkpoint")


# ---------------------------------------------------------------------------------------------- finding it

def run_root(logger_config: Any, default_root_dir: str | None) -> tuple[Path, Any] | None:
    """(``<save_dir>/<name>``, configured version) of a CSV/TensorBoard logger config; None for others."""
    if isinstance(logger_config, list):
        logger_config = logger_config[0] if logger_config else None
    class_path = str(setting(logger_config, "class_path", ""))
    if not class_path.endswith(("CSVLogger", "TensorBoardLogger")):
        return None
    args = setting(logger_config, "init_args", {})
    save_dir = setting(args, "save_dir") or default_root_dir or "."
    name = setting(args, "name", "lightning_logs")
    root = Path(save_dir) / name if name else Path(save_dir)
    return root, setting(args, "version")


def run_dir_of(root: Path, version: Any) -> Path:
    return root / (f"version_{version}" if isinstance(version, int) else str(version))


def find_last_checkpoint(root: Path, version: Any = None) -> tuple[Path | None, Any]:
    """The run to continue under ``root``: (its ``last.ckpt`` or None, its version).

    With a configured version, that run; otherwise the highest ``version_N`` that has a last checkpoint.
    """
    if version is not None:
        path = run_dir_of(root, version) / "checkpoints" / FILENAME
        return (path if path.is_file() else None), version
    versions = sorted((int(m.group(1)) for p in (root.iterdir() if root.is_dir() else ())
                       if (m := _VERSION.match(p.name))), reverse=True)
    for v in versions:
        path = run_dir_of(root, v) / "checkpoints" / FILENAME
        if path.is_file():
            return path, v
    return None, None


def resolve_last(logger_config: Any, default_root_dir: str | None) -> tuple[Path | None, Any]:
    """For ``--ckpt_path last``: (checkpoint or None when there is no run to continue, version to log into)."""
    found = run_root(logger_config, default_root_dir)
    if found is None:
        raise ConfigError("ckpt_path 'last' finds runs of a CSVLogger or TensorBoardLogger; with this logger "
                          "give the checkpoint's path")
    return find_last_checkpoint(*found)
