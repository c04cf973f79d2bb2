"""The loop every converter shares: list items, skip finished ones, read → map → write atomically.

An output file that exists is complete, because every file is written to a temporary name
and renamed into place (`rim_bench.core.io.atomic_path`). A rerun after an interruption therefore
skips what exists and writes only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rim_bench.core.errors import DataError
from rim_bench.core.io import atomic_path

IGNORE = 255


@dataclass(frozen=True)
class ConvertReport:
    """What one conversion did.

    Attributes:
        written: label files written by this run.
        skipped: label files already present (a previous run wrote them), left as they are.
        total: label files of the split, ``written + skipped``.
        out_dir: the converted data set's folder, the one its reader finds under data.root
            (e.g. ``DST/VOCdevkit/VOC2010``).
    """

    written: int
    skipped: int
    total: int
    out_dir: Path


@dataclass(frozen=True)
class Item:
    """One raw label file and the converted file it becomes."""

    src: Path
    dst: Path


@dataclass(frozen=True)
class LabelMap:
    """A vectorised id → class lookup.

    Attributes:
        lut: ``(N,) uint8``; ``lut[i]`` is the output value of raw id ``i``.
        known: ``(N,) bool``; the raw ids the source format can hold. Any other value means
            the input is not what the converter expects, so it is an error, never a guess.
        expects: the known ids in words, for the error message.
    """

    lut: np.ndarray
    known: np.ndarray
    expects: str

    @classmethod
    def build(cls, mapping: Mapping[int, int], known: Iterable[int], expects: str,
              default: int = IGNORE, size: int = 256) -> LabelMap:
        """`mapping` gives the output of some ids; every other id in `known` gets `default`."""
        lut = np.full(size, default, dtype=np.uint8)
        lut[list(mapping)] = list(mapping.values())
        known_mask = np.zeros(size, dtype=bool)
        known_mask[list(known)] = True
        return cls(lut, known_mask, expects)

    def apply(self, ids: np.ndarray, path: Path) -> np.ndarray:
        """Map a raw ``(H, W)`` integer id map read from `path` to its ``(H, W) uint8`` classes."""
        if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.size == 0:
            raise DataError(f"'{path}' holds a {ids.dtype} array of shape {ids.shape}, expected a single-channel "
                            f"(H, W) label map ({self.expects}); re-extract it from the original archive")
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= len(self.lut):
            self._unknown(path, low if low < 0 else high)
        unknown = ~self.known[ids]
        if unknown.any():
            self._unknown(path, int(ids[unknown][0]))
        return self.lut[ids]

    def _unknown(self, path: Path, value: int) -> None:
        raise DataError(f"'{path}' holds label value {value}, expected {self.expects}; "
                        f"point --src at the unmodified raw labels or re-extract this file")


def require_dir(path: Path, expected: str) -> Path:
    """`path` if it is a folder, else a DataError that says what belongs there."""
    if not path.is_dir():
        raise DataError(f"'{path}' not found: expected {expected}")
    return path


def find_files(folder: Path, pattern: str, expected: str) -> list[Path]:
    """The files under `folder` matching the glob `pattern`, sorted; none is a DataError."""
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise DataError(f"no '{pattern}' files in '{folder}': expected {expected}")
    return files


def read_png(path: Path) -> np.ndarray:
    """A label PNG's stored values as an array, ``(H, W)`` for a single-channel file.

    A palette ("P") PNG gives its indices, not colours: those are the label ids.
    """
    if not path.is_file():
        raise DataError(f"'{path}' not found: every listed image needs its raw label file")
    try:
        with Image.open(path) as img:
            return np.array(img)
    except OSError as e:
        raise DataError(f"'{path}' cannot be read as a PNG ({e}); re-extract it from the original archive") from None


def write_png(labels: np.ndarray, path: Path) -> None:
    """Write ``(H, W) uint8`` class ids as an 8-bit single-channel (mode "L") PNG, atomically."""
    with atomic_path(path) as tmp:
        # The temporary name ends in ".tmp", so the format cannot come from the suffix.
        Image.fromarray(labels).save(tmp, format="PNG")


def convert_all(name: str, items: Sequence[Item], read: Callable[[Path], np.ndarray],
                labels: LabelMap, out_dir: Path) -> ConvertReport:
    """Convert each item whose output is missing: read its raw ids, map them, write the PNG."""
    written = skipped = 0
    for item in tqdm(items, desc=name, unit="img"):
        if item.dst.exists():
            skipped += 1
            continue
        write_png(labels.apply(read(item.src), item.src), item.dst)
        written += 1
    return ConvertReport(written=written, skipped=skipped, total=len(items), out_dir=out_dir)
