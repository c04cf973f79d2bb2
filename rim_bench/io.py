"""Atomic file writes: a reader never sees a half-written file, and a crash leaves none.

Each write goes to a unique temporary file in the target's directory and is renamed
into place (`os.replace` is atomic on POSIX and on a shared file system).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def shipped_or_path(package: str, folder: str, suffix: str, name_or_path: str, what: str) -> Path:
    """A data file shipped in ``package/folder/<name><suffix>``, or a user's file at a path.

    Raises:
        DataError: neither exists; the message lists the shipped names.
    """
    from importlib import resources

    from rim_bench.errors import DataError

    shipped_dir = resources.files(package) / folder
    shipped = shipped_dir / f"{name_or_path}{suffix}"
    if shipped.is_file():
        return Path(str(shipped))
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    known = sorted(p.name[: -len(suffix)] for p in shipped_dir.iterdir() if p.name.endswith(suffix))
    raise DataError(f"{what} '{name_or_path}' not found: give a file path or one of {', '.join(known)}")


def safe_name(text: str) -> str:
    """`text` as a file or folder name: anything but letters, digits, '.', '_', '-' becomes '_'."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", text)
