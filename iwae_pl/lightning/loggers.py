"""Loggers that need no account by default; W&B goes offline by itself when there is no API key."""
from __future__ import annotations

import netrc
import os
from pathlib import Path

from pytorch_lightning.loggers import WandbLogger as _WandbLogger


def wandb_credentials_available() -> bool:
    """True if an API key is in the environment or ``wandb login`` stored one in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class WandbLogger(_WandbLogger):
    """Lightning's WandbLogger; ``offline`` defaults to True when no W&B credentials are found, so a
    run never stops to ask for a login (sync later with ``wandb sync``)."""

    _created = None  # the W&B run the latest instance started in this process

    def __init__(self, *args, offline: bool | None = None, **kwargs):
        super().__init__(*args, offline=not wandb_credentials_available() if offline is None else offline, **kwargs)

    @property
    def experiment(self):
        """Lightning's, except that a run an earlier instance started is finished first: Lightning would
        reuse it, so a second run in the same process (a sweep trial) got the first one's id and directory."""
        if self._experiment is None:
            import wandb

            if wandb.run is not None and wandb.run is WandbLogger._created:
                wandb.finish()
            WandbLogger._created = super().experiment
        return self._experiment


def run_directory(trainer) -> str:
    """The run directory of ``trainer``: where its config.yaml, checkpoints/, figures/ and summary.json go.

    CSV and TensorBoard: the logger's version directory (``<save_dir>/<name>/version_N``). Other loggers
    (W&B): ``<save_dir>/<name>/<version>``, the directory ModelCheckpoint already puts ``checkpoints/``
    in, so that two runs never share a config or a summary (``trainer.log_dir`` is the bare ``save_dir``
    for them). Without a logger: ``default_root_dir``. Not a collective: safe to call on one rank
    (``trainer.log_dir`` broadcasts and must be called on all).
    """
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None:
        return str(trainer.default_root_dir)
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return str(logger.log_dir)
    version = logger.version
    version = version if isinstance(version, str) else f"version_{version}"
    return os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name), version)
