"""COCO-Object (80 things + background) and COCO-Stuff-171, from COCO-Stuff-164k val2017.

```
coco_stuff164k/images/val2017/<id>.jpg
coco_stuff164k/annotations/val2017/<id>_instanceTrainIds.png   COCO-Object: 0 background, 1..80
coco_stuff164k/annotations/val2017/<id>_labelTrainIds.png      COCO-Stuff: 0..170, 255 unlabeled
```
There is no split file: every image of the split folder is used (5,000 for val2017).
"""

from __future__ import annotations

from rim_bench.core.registry import DATASETS
from rim_bench.data.base import BenchmarkDataset, Entry


class COCOStuffLayout(BenchmarkDataset):
    subdir = "coco_stuff164k"
    markers = ("images", "annotations")
    label_suffix: str

    def list_entries(self, split: str) -> list[Entry]:
        folder = f"{split}2017"
        images = sorted((self.dir / "images" / folder).glob("*.jpg"))
        labels = self.dir / "annotations" / folder
        return [Entry(p.stem, p, labels / f"{p.stem}{self.label_suffix}") for p in images]


@DATASETS.register("coco_object")
class COCOObject(COCOStuffLayout):
    """COCO-Object: 80 thing classes and background (stuff and, by default, unlabeled pixels)."""

    label_suffix = "_instanceTrainIds.png"
    default_classes = "coco_object"
    prepare = (
        "extract val2017.zip to coco_stuff164k/images/ and run `rim-bench convert coco_object "
        "--src STUFFTHINGMAPS_DIR --dst DATA_ROOT` (see datasets/README.md)"
    )


@DATASETS.register("coco_stuff171")
class COCOStuff171(COCOStuffLayout):
    """COCO-Stuff-164k with 171 classes (80 things, 91 stuff)."""

    label_suffix = "_labelTrainIds.png"
    default_classes = "coco_stuff171"
    prepare = (
        "extract val2017.zip to coco_stuff164k/images/ and run `rim-bench convert coco_stuff171 "
        "--src STUFFTHINGMAPS_DIR --dst DATA_ROOT` (see datasets/README.md)"
    )
