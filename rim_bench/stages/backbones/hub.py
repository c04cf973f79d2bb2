"""Loading pretrained weights from a hub id or a local directory, with errors a user can act on."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rim_bench.core.errors import ConfigError

T = TypeVar("T")


def from_hub_or_dir(load: Callable[[str], T], model: str, key: str, what: str, example_id: str) -> T:
    """Call ``load(source)`` for a hub id or a local directory saved with ``save_pretrained``.

    Args:
        load: e.g. ``AutoModel.from_pretrained``.
        model: the config value: a hub id, or a path (starting with ``.``, ``/`` or ``~``).
        key: the config key, for error messages.
        what: the model's name in error messages.
        example_id: a hub id to show in the download hint.
    """
    local = Path(model).expanduser()
    if is_local(model) and not local.is_dir():
        raise ConfigError(f"{key}: no directory '{model}'; give a hub id or a local model directory")
    try:
        return load(str(local) if local.is_dir() else model)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{key}: cannot load {what} '{model}' ({first}). Without network access, download it elsewhere "
            f"(`hf download {example_id} --local-dir DIR`, see docs/weights.md) and pass {key}=DIR"
        ) from None


def is_local(model: str) -> bool:
    """Whether a model value means a local folder (a path, or an existing directory) rather than a hub id."""
    return model.startswith((".", "/", "~")) or Path(model).expanduser().is_dir()


def cached_snapshot(repo_id: str, marker: str) -> Path | None:
    """The folder of `repo_id` in the local hub cache (``HF_HOME``) if its `marker` file is there."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id=repo_id, filename=marker)
    except ValueError:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def hub_offline() -> bool:
    """Whether huggingface-hub is told not to use the network (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub (``HF_ENDPOINT``) cannot be reached, in a few words, or None when it can (or a
    proxy is set, which a direct connection cannot tell). One connection with a short timeout:
    without a network huggingface-hub retries for half a minute before it fails."""
    import socket
    import urllib.request
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    if url.hostname is None or urllib.request.getproxies().get(url.scheme):
        return None
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as e:
        return f"{url.hostname}: {e.strerror or type(e).__name__}"
    return None
