"""Every error a user can act on, and the validators that raise them.

Messages are one line naming the setting, the bad value and what is allowed. The CLI turns a
``ConfigError`` into exit code 2 (misuse) and a ``DataError`` into exit code 1 (files).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence


class ConfigError(ValueError):
    """A bad setting (layer spec, objective, M, K, estimator, ...). The CLI exits with code 2."""


class DataError(ValueError):
    """A user-facing data problem (bad argument, missing or corrupt file); the message is one line."""


class DataSettingError(DataError, ConfigError):
    """A bad data setting (unknown dataset, bad batch size, ...): also a ConfigError, so the CLI
    treats it as misuse (exit code 2) rather than as a problem with the files (exit code 1)."""


def check_int(name: str, value: object, minimum: int = 1, error: type[Exception] = ConfigError) -> int:
    """value as an int if it is an integer (not a bool) >= minimum; else ``error`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise error(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False, high_open: bool = False, error: type[Exception] = ConfigError) -> float:
    """value as a float if it is a finite real (not a bool) in the interval; else ``error`` naming it."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise error(f"{name} must be a finite number in {interval}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[str], error: type[Exception] = ConfigError) -> str:
    """value if it is one of choices; else ``error`` naming it and listing the choices."""
    if value not in choices:
        raise error(f"unknown {name} {value!r}; allowed: {', '.join(map(str, choices))}")
    return value
