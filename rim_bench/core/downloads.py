"""The sizes of the downloads a run may need (``downloads.yaml`` beside this file: SAM's released
checkpoints and the hub models' weights), for `rim-bench plan` and the SAM checkpoint checks."""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

import yaml


@functools.cache
def download_sizes() -> dict[str, dict[str, dict[str, Any]]]:
    """``{"sam": {model_type: {file, bytes, md5}}, "hub": {hub id: {bytes, source}}}``."""
    return yaml.safe_load(files("rim_bench.core").joinpath("downloads.yaml").read_text())


def hub_size(model: str) -> tuple[int, str] | None:
    """The listed bytes of a hub model's weights and where the number comes from; None if not listed."""
    entry = download_sizes()["hub"].get(model)
    return (int(entry["bytes"]), str(entry["source"])) if entry else None
