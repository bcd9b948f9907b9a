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

    def __init__(self, *args, offline: bool | None = None, **kwargs):
        super().__init__(*args, offline=not wandb_credentials_available() if offline is None else offline, **kwargs)
