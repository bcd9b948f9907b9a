"""Errors a user can act on. Their messages are one line: the bad value and what is allowed."""


class ConfigError(ValueError):
    """A bad setting (layer spec, objective, M, K, estimator, ...). The CLI exits with code 2."""
