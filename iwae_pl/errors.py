"""Errors a user can act on. Their messages are one line: the bad value and what is allowed."""
from __future__ import annotations

import numbers


class ConfigError(ValueError):
    """A bad setting (layer spec, objective, M, K, estimator, ...). The CLI exits with code 2."""


def check_int(name: str, value: object, minimum: int = 1, error: type[Exception] = ConfigError) -> int:
    """value as an int if it is an integer (not a bool) >= minimum; else ``error`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise error(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
