"""Errors a user can fix. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

from collections.abc import Collection


class RimBenchError(Exception):
    """Bad input (config, data, weights): the message names the file, the value and the fix."""


class ConfigError(RimBenchError):
    """A config key, value or file is wrong."""


class DataError(RimBenchError):
    """A data set or reference folder is missing or malformed."""


class ParamError(ConfigError):
    """A stage parameter is invalid; `build_stage` prefixes the parameter's full config key."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def require_choice(param: str, value: object, choices: Collection[str]) -> None:
    """Raise `ParamError` for `param` unless `value` is one of `choices`, listing them."""
    if value not in choices:
        raise ParamError(param, f"unknown '{value}' (choose {', '.join(choices)})")
