"""The project's own subcommands beside LightningCLI's (``sweep``, ``sweep-report``, ``experiment``,
``report``, ``plot``): name -> (function taking the remaining argv, one-line description). Each package
registers its commands when imported; ``iwae_pl.cli`` imports them all.
"""
from __future__ import annotations

from typing import Callable

COMMANDS: dict[str, tuple[Callable[[list[str]], object], str]] = {}
