"""The shared base of every benchmark data set.

A benchmark lists ``(id, image path, label path)`` entries from its on-disk layout (the
layouts mmsegmentation's converters write); the base reads them, maps raw label values
to class ids, and checks what can go wrong, naming the file and the fix:

* at construction (cheap, before any model loads): the root, the layout, the split
  file, and that every listed image has its label file;
* per sample (as it is read, and for all samples in `check_all`): unreadable images,
  image/label size mismatches, and label values outside the class range.

`data.root` may be the folder that holds the benchmark's folder (mmsegmentation's
``data/``, e.g. the one containing ``VOCdevkit/``) or the benchmark's folder itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from rim_bench.errors import DataError
from rim_bench.types import IGNORE_INDEX, Sample


@dataclass(frozen=True)
class Entry:
    image_id: str
    image: Path
    label: Path


class BenchmarkDataset(Dataset):
    """Test images and labels of one benchmark split.

    Subclasses set the class attributes and implement `list_entries`.

    Args:
        root: ``data.root``: the benchmark's folder or its parent.
        split: ``val`` for every benchmark here (ADE20K's folder is ``validation``).
        max_images: keep the first N entries only; null keeps all.
        num_classes: the length of the class file, for the label range check.
    """

    subdir: ClassVar[str]  # the benchmark's folder below mmsegmentation's data/ folder
    markers: ClassVar[tuple[str, ...]]  # sub-folders that identify the layout
    default_classes: ClassVar[str]  # the shipped class file
    reduce_zero_label: ClassVar[bool] = False  # raw 0 → ignore, raw v → v - 1
    prepare: ClassVar[str] = "see datasets/README.md"  # how to make the labels, for error messages

    def __init__(self, root: str | Path, split: str, max_images: int | None, num_classes: int) -> None:
        self.dir = self.locate(Path(root).expanduser())
        self.split = split
        self.num_classes = num_classes
        entries = self.list_entries(split)
        if max_images is not None:
            entries = entries[:max_images]
        if not entries:
            raise DataError(f"{self.dir}: no '{split}' images found; {self.prepare}")
        for entry in entries:
            if not entry.image.is_file():
                raise DataError(f"image '{entry.image}' of id '{entry.image_id}' not found; {self.prepare}")
            if not entry.label.is_file():
                raise DataError(f"image '{entry.image.name}' has no label: '{entry.label}' not found; {self.prepare}")
        self.entries = entries
        self._lut = label_lut(self.reduce_zero_label)

    @classmethod
    def locate(cls, root: Path) -> Path:
        """The benchmark's folder: ``root/subdir`` or `root` itself, whichever has the layout."""
        if not root.is_dir():
            raise DataError(f"data root '{root}' does not exist: set data.root=PATH (see datasets/README.md)")
        for candidate in (root / cls.subdir, root):
            if all((candidate / m).is_dir() for m in cls.markers):
                return candidate
        present = sorted(p.name for p in root.iterdir())[:12]
        wanted = ", ".join(f"{cls.subdir}/{m}/" for m in cls.markers)
        raise DataError(
            f"data root '{root}' does not have the expected layout: wanted {wanted} (or those folders directly "
            f"under it); found {', '.join(present) or 'nothing'}; {cls.prepare}"
        )

    def list_entries(self, split: str) -> list[Entry]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        entry = self.entries[index]
        image = read_image(entry.image, "RGB")
        raw = read_image(entry.label, None)
        if raw.ndim != 2:
            raise DataError(f"label '{entry.label}' has {raw.shape[-1]} channels: expected a single-channel class-id PNG; {self.prepare}")
        if image.shape[:2] != raw.shape:
            raise DataError(
                f"label '{entry.label}' is {raw.shape[0]}x{raw.shape[1]} but image '{entry.image.name}' is "
                f"{image.shape[0]}x{image.shape[1]}: labels must have the image's size; {self.prepare}"
            )
        label = self._lut[raw] if raw.dtype == np.uint8 else self._map_wide(raw, entry.label)
        bad = (label != IGNORE_INDEX) & (label >= self.num_classes)
        if bad.any():
            values = sorted(set(raw[bad].tolist()))[:5]
            raise DataError(
                f"label '{entry.label}' has values {values} outside the {self.num_classes} classes (and not 255): "
                f"wrong converter output or class file? {self.prepare}"
            )
        return Sample(
            image=torch.from_numpy(image).permute(2, 0, 1).contiguous(),
            label=torch.from_numpy(label.astype(np.int64)),
            image_id=entry.image_id,
        )

    def _map_wide(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.min() < 0 or raw.max() > 255:
            raise DataError(f"label '{path}' has values outside 0..255 ({raw.min()}..{raw.max()}); {self.prepare}")
        return self._lut[raw.astype(np.uint8)]

    def check_all(self) -> Iterator[str]:
        """Read every sample and yield one message per problem (with a progress bar)."""
        for index in tqdm(range(len(self)), desc=f"checking {type(self).__name__}", unit="img"):
            try:
                self[index]
            except DataError as e:
                yield str(e)


def label_lut(reduce_zero_label: bool) -> np.ndarray:
    """A 256-entry lookup table from raw label values to class ids (255 stays 255)."""
    lut = np.arange(256, dtype=np.int64)
    if reduce_zero_label:
        lut = lut - 1
        lut[0] = IGNORE_INDEX
        lut[255] = IGNORE_INDEX
    return lut


def read_image(path: Path, mode: str | None) -> np.ndarray:
    """Read an image as an array: ``(H, W, 3) uint8`` for mode "RGB", raw indices for mode None."""
    try:
        with Image.open(path) as img:
            return np.array(img.convert(mode) if mode else img)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"'{path}' cannot be read as an image ({e}): re-download or re-convert it") from None


def load_rgb(path: Path) -> torch.Tensor:
    """An image file as a ``(3, H, W) uint8`` RGB tensor (`DataError` if it cannot be read)."""
    return torch.from_numpy(read_image(path, "RGB")).permute(2, 0, 1).contiguous()


def read_split(path: Path, prepare: str) -> list[str]:
    """The ids in a split file, one a line."""
    if not path.is_file():
        raise DataError(f"split file '{path}' not found; {prepare}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
