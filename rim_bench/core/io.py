"""Atomic file writes: a reader never sees a half-written file, and a crash leaves none.

Each write goes to a unique temporary file in the target's directory and is renamed
into place (`os.replace` is atomic on POSIX and on a shared file system).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rim_bench.core.errors import DataError, one_line


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

    shipped_dir = resources.files(package) / folder
    shipped = shipped_dir / f"{name_or_path}{suffix}"
    if shipped.is_file():
        return Path(str(shipped))
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    known = sorted(p.name[: -len(suffix)] for p in shipped_dir.iterdir() if p.name.endswith(suffix))
    raise DataError(f"{what} '{name_or_path}' not found: give a file path or one of {', '.join(known)}")


MAX_NAME = 96  # characters of a name from data; room is left for suffixes within the usual 255-byte limit


def safe_name(text: str, max_len: int = MAX_NAME) -> str:
    """`text` (an image id, a class name, a phrase, a file stem: anything from data or users) as one
    file or folder name. Letters, digits, '.', '_' and '-' are kept, anything else becomes '_'.

    A name that had to change (other characters, longer than `max_len`, or "." / ".." / empty)
    gets a hash of the original text as a suffix, so two different texts never share a file:
    ``"a/b"`` → ``"a_b-<hash>"``, ``"a_b"`` → ``"a_b"``. The result has at most `max_len` ASCII
    characters, and a result is its own safe name.
    """
    import hashlib
    import re

    name = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    if name == text and name not in ("", ".", "..") and len(name) <= max_len:
        return name
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{name[:max_len - len(digest) - 1].strip('.') or '_'}-{digest}"


def file_in(folder: str | os.PathLike, name: str, suffix: str = "") -> Path:
    """``folder/<safe_name(name)><suffix>``, checked to resolve inside `folder` (a link in the
    way could point elsewhere): the one way a name from data becomes an output path.

    Raises:
        DataError: the path would leave `folder`.
    """
    folder = Path(folder)
    path = folder / f"{safe_name(name)}{suffix}"
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise DataError(f"'{path}' resolves to '{path.resolve()}', outside '{root}': remove the link in the way")
    return path


def set_aside(path: str | os.PathLike, error: BaseException | str) -> Path:
    """Move a damaged cache entry (file or folder) out of the way, to ``<name>.damaged-<time>``,
    and warn in one line; the caller computes it again. Returns the new place."""
    import time
    import warnings

    path = Path(path)
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    reason = one_line(f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error)
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another process set it aside first
        return aside
    warnings.warn(f"damaged cache entry '{path}' ({reason}): moved to '{aside.name}', computing it again",
                  stacklevel=2)
    return aside


def remove_stale(folder: str | os.PathLike, pattern: str, older_than_s: float = 3600.0) -> list[Path]:
    """Delete the entries of `folder` matching `pattern` not modified for `older_than_s`
    (temporary folders left by a killed process; younger ones may belong to a running one)."""
    import shutil
    import time

    removed = []
    for path in Path(folder).glob(pattern):
        try:
            if time.time() - path.lstat().st_mtime < older_than_s:
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            removed.append(path)
        except OSError:  # removed by another process meanwhile, or not ours to remove
            continue
    return removed
