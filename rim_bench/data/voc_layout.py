"""A data set in PASCAL VOC's on-disk layout.

```
root/JPEGImages/<id>.jpg
root/SegmentationClass/<id>.png      palette PNG, pixel value = class id, 255 = ignore
root/ImageSets/Segmentation/<split>.txt
```
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from rim_bench.errors import DataError
from rim_bench.types import Sample


class VOCLayoutDataset(Dataset):
    """Images, labels and ids listed in a split file.

    Args:
        root: the folder holding ``JPEGImages/``, ``SegmentationClass/`` and ``ImageSets/``.
        split: the split file's name (``val`` → ``ImageSets/Segmentation/val.txt``).
        max_images: keep only the first N ids (quick runs); null keeps all.
    """

    image_dir = "JPEGImages"
    label_dir = "SegmentationClass"
    split_dir = "ImageSets/Segmentation"

    def __init__(self, root: str | Path, split: str, max_images: int | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(
                f"data root '{self.root}' does not exist: set data.root=PATH to the folder holding "
                f"{self.image_dir}/ and {self.label_dir}/ (see datasets/README.md)"
            )
        split_file = self.root / self.split_dir / f"{split}.txt"
        if not split_file.is_file():
            raise DataError(f"split file '{split_file}' not found: expected the VOC layout under {self.root}")
        self.ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        if max_images is not None:
            self.ids = self.ids[:max_images]
        if not self.ids:
            raise DataError(f"split file '{split_file}' lists no images")

    def __len__(self) -> int:
        return len(self.ids)

    def paths(self, image_id: str) -> tuple[Path, Path]:
        return self.root / self.image_dir / f"{image_id}.jpg", self.root / self.label_dir / f"{image_id}.png"

    def __getitem__(self, index: int) -> Sample:
        image_id = self.ids[index]
        image_path, label_path = self.paths(image_id)
        image = _read(image_path, "RGB")
        label = _read(label_path, None)
        if image.shape[:2] != label.shape[:2]:
            raise DataError(f"{label_path}: label is {label.shape[:2]} but image {image_path.name} is {image.shape[:2]}")
        return Sample(
            image=torch.from_numpy(image).permute(2, 0, 1).contiguous(),
            label=torch.from_numpy(label.astype(np.int64)),
            image_id=image_id,
        )


def _read(path: Path, mode: str | None) -> np.ndarray:
    """Read an image file as an array; a palette PNG keeps its indices (mode None)."""
    if not path.is_file():
        raise DataError(f"'{path}' not found: every id in the split file needs an image and a label")
    try:
        with Image.open(path) as img:
            return np.array(img.convert(mode) if mode else img)
    except OSError as e:
        raise DataError(f"'{path}' cannot be read as an image ({e}); re-extract or re-convert it") from None
