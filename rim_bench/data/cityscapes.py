"""Cityscapes (19 classes) with `labelTrainIds` labels.

```
cityscapes/leftImg8bit/val/<city>/<stem>_leftImg8bit.png
cityscapes/gtFine/val/<city>/<stem>_gtFine_labelTrainIds.png    0..18, 255 ignored
```
Not `_instanceTrainIds` or `_labelIds`: those hold other ids and give near-zero mIoU.
"""

from __future__ import annotations

from rim_bench.core.registry import DATASETS
from rim_bench.data.base import BenchmarkDataset, Entry

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


@DATASETS.register("cityscapes")
class Cityscapes(BenchmarkDataset):
    """Cityscapes val: 500 images."""

    subdir = "cityscapes"
    markers = ("leftImg8bit", "gtFine")
    default_classes = "cityscapes"
    prepare = (
        "extract leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip under data.root/cityscapes and run "
        "`rim-bench convert cityscapes --src DATA_ROOT/cityscapes --dst DATA_ROOT` (see datasets/README.md)"
    )

    def list_entries(self, split: str) -> list[Entry]:
        images = sorted((self.dir / "leftImg8bit" / split).glob(f"*/*{IMAGE_SUFFIX}"))
        entries = []
        for image in images:
            stem = image.name[: -len(IMAGE_SUFFIX)]
            label = self.dir / "gtFine" / split / image.parent.name / f"{stem}{LABEL_SUFFIX}"
            entries.append(Entry(stem, image, label))
        return entries
