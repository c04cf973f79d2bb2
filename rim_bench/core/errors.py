"""Errors a user can fix. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

import errno
import re
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


def one_line(text: str) -> str:
    """A message on one line: its lines joined with " | ", runs of spaces collapsed."""
    lines = [re.sub(r"\s+", " ", line).strip() for line in str(text).strip().splitlines()]
    return " | ".join(line for line in lines if line)


def error_line(error: Exception) -> str:
    """The error's message on one line: its lines joined. An error raised in a DataLoader
    worker comes back wrapped in the worker's traceback; its own message is the last line."""
    text = str(error).strip()
    if "Traceback (most recent call last)" in text:
        last = text.splitlines()[-1]
        ours = last.startswith(("rim_bench.core.errors.", "DataError", "ConfigError"))
        text = last.split(": ", 1)[1] if ours else last
    return one_line(text)


# A disk that takes no more: whatever file was being written, the fix is the user's.
FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def disk_error_line(error: OSError) -> str | None:
    """One line for a write that a full, over-quota or read-only disk refused (any cache or
    result file); None for another OSError (a bug to see whole)."""
    if error.errno not in FULL_OR_READ_ONLY:
        return None
    where = f" '{error.filename}'" if error.filename else ""
    return (f"cannot write{where} ({error.strerror}): free space there, or set cache_dir or output_dir to "
            "another disk")
