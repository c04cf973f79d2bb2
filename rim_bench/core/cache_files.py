"""Cache files that carry a checksum of their content, written when they are published and
checked whenever they are read: a cache entry altered on disk (flipped bits, a truncated or
edited file, a file from an older rim-bench without a checksum) is never used.

Tensors are stored as safetensors with the checksum in the file's metadata, over the tensors'
names, dtypes, shapes and bytes and the other metadata; any other file of an entry (a bank's
JSON, a contact-sheet strip) has its checksum (`file_checksum`) in the metadata of the
entry's tensors, and is checked against it (`check_file`) before it is read. Every floating
tensor read is also checked to be finite: no cache holds NaN or infinity.

An entry also proves what it is for: it records the key it was made for (`MADE_FOR`: e.g. the
stage settings' key and the image digest of a region entry), inside the checksummed content,
and a reader checks it against the key it looks up. A checksum alone holds for an intact file
in the wrong place: two entries swapped or copied over one another, which would give one
image another's regions with no warning. A reader that gets `DamagedCacheError` sets the
entry aside (`rim_bench.core.io.set_aside`) and computes it again.

SHA-256: on CPUs with SHA extensions it hashes faster than BLAKE2b (1.7 against 1.2 GiB/s on
the development machine); its cost on a 100k-reference bank is in benchmarks/cache_checksum.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from rim_bench.core.errors import DataError
from rim_bench.core.io import atomic_path

ALGORITHM = "sha256"
CHECKSUM = "checksum"  # the safetensors metadata key that holds it
MADE_FOR = "made_for"  # the metadata key that holds the key an entry was made for
UNVERIFIED = "written without a checksum (by an older rim-bench), so unverified"


class DamagedCacheError(DataError):
    """A cache entry cannot be read, or its content is not what was written; its reader sets
    it aside and computes it again."""


def tensors_checksum(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> str:
    """``"sha256:<hex>"`` over CPU `tensors` (names, dtypes, shapes, bytes) and `metadata`."""
    digest = hashlib.new(ALGORITHM)
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)  # the buffer, not a copy of it
    digest.update(json.dumps(sorted((k, v) for k, v in metadata.items() if k != CHECKSUM)).encode())
    return f"{ALGORITHM}:{digest.hexdigest()}"


def save_tensors(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None, *,
                 made_for: str) -> None:
    """Write `tensors` (moved to the CPU) and string `metadata` to `path` atomically, with the
    key the entry was `made_for` and their checksum."""
    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    metadata = {**(metadata or {}), MADE_FOR: made_for}
    metadata[CHECKSUM] = tensors_checksum(tensors, metadata)
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:  # a full disk comes as this, not as the OSError every writer catches
            raise _os_error(e, path) from None


def _os_error(error: SafetensorError, path: Path) -> OSError:
    """safetensors' write error (``IoError(Os { code: 28, ..., message: "No space left on device" })``)
    as the `OSError` it wraps, naming `path`."""
    code = re.search(r"code: (\d+)", str(error))
    number = int(code.group(1)) if code else errno.EIO
    return OSError(number, os.strerror(number), str(path))


def load_tensors(path: Path, *, made_for: str | None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and metadata that `save_tensors` wrote to `path`, checked; `made_for` is the
    key the reader looks up (None: whatever entry it is, for tools that inspect a file).

    Raises:
        DamagedCacheError: the file cannot be read, has no checksum or another one, was made
            for another key, or holds a non-finite float.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors' own errors name no file
        raise DamagedCacheError(f"cached file '{path}' cannot be read ({type(e).__name__}: {e})") from None
    stored = metadata.pop(CHECKSUM, None)
    if stored is None:
        raise DamagedCacheError(f"cached file '{path}' was {UNVERIFIED}")
    if stored != tensors_checksum(tensors, metadata):
        raise DamagedCacheError(f"cached file '{path}' does not match its checksum (altered on disk)")
    check_made_for(path, metadata.get(MADE_FOR), made_for)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not all_finite(tensor):
            raise DamagedCacheError(f"cached file '{path}': '{name}' holds NaN or infinity")
    return tensors, metadata


def check_made_for(path: Path, stored: str | None, expected: str | None) -> None:
    """Raise `DamagedCacheError` unless the entry at `path`, made for `stored`, is the `expected` one."""
    if expected is None:
        return
    if stored is None:
        raise DamagedCacheError(f"cached file '{path}' does not record what it was made for (written by an "
                                "older rim-bench), so unverified")
    if stored != expected:
        raise DamagedCacheError(f"cached file '{path}' was made for another entry ({_short(stored)}, not "
                                f"{_short(expected)}): moved, copied or swapped on disk")


def _short(key: str, limit: int = 80) -> str:
    """`key` for a message: a long one (a bank's spec) cut, with its hash to tell two apart."""
    if len(key) <= limit:
        return key
    return f"{key[:limit // 2]}... ({ALGORITHM} {hashlib.new(ALGORITHM, key.encode()).hexdigest()[:12]})"


def all_finite(tensor: Tensor) -> bool:
    """Whether a float tensor holds no NaN or infinity: its minimum and maximum (they carry a
    NaN) are finite, a 20th of ``isfinite(tensor).all()``'s time on a large bank."""
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def tensors_metadata(path: Path) -> dict[str, str]:
    """The metadata of a `save_tensors` file alone, unverified (reads no tensor: for estimates)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise DamagedCacheError(f"cached file '{path}' cannot be read ({type(e).__name__}: {e})") from None


def file_checksum(path: Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes, for an entry to record the files it owns."""
    return f"{ALGORITHM}:{file_digest(path)}"


def file_digest(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in blocks (a model file can be gigabytes)."""
    digest = hashlib.new(ALGORITHM)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, checksum: str | None) -> None:
    """Raise `DamagedCacheError` unless `path` has the `checksum` its owner recorded."""
    try:
        actual = file_checksum(path)
    except OSError as e:
        raise DamagedCacheError(f"cached file '{path}' cannot be read ({e.strerror})") from None
    if checksum is None:
        raise DamagedCacheError(f"cached file '{path}' was {UNVERIFIED}")
    if actual != checksum:
        raise DamagedCacheError(f"cached file '{path}' does not match its checksum (altered on disk)")
