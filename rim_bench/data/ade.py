"""ADE20K (SceneParsing, 150 classes) as released: labels need no conversion.

```
ADEChallengeData2016/images/validation/<id>.jpg
ADEChallengeData2016/annotations/validation/<id>.png    0 = other (not scored), 1..150
```
"""

from __future__ import annotations

from rim_bench.core.registry import DATASETS
from rim_bench.data.base import BenchmarkDataset, Entry

SPLIT_FOLDERS = {"val": "validation", "train": "training"}


@DATASETS.register("ade20k")
class ADE20K(BenchmarkDataset):
    """ADE20K val: 2,000 images, 150 classes; label 0 is ignored."""

    subdir = "ADEChallengeData2016"
    markers = ("images", "annotations")
    default_classes = "ade20k"
    reduce_zero_label = True
    prepare = "extract ADEChallengeData2016.zip under data.root (see datasets/README.md)"

    def list_entries(self, split: str) -> list[Entry]:
        folder = SPLIT_FOLDERS.get(split, split)
        images = sorted((self.dir / "images" / folder).glob("*.jpg"))
        return [Entry(p.stem, p, self.dir / "annotations" / folder / f"{p.stem}.png") for p in images]
