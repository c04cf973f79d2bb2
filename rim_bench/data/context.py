"""PASCAL-Context (Context60, Context59) in mmsegmentation's converted layout.

```
VOCdevkit/VOC2010/JPEGImages/<id>.jpg
VOCdevkit/VOC2010/SegmentationClassContext/<id>.png       0 background, 1..59 (rim-bench convert context)
VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt   5,105 ids
```
"""

from __future__ import annotations

from rim_bench.core.registry import DATASETS
from rim_bench.data.voc import VOCLayout


@DATASETS.register("context60")
class Context60(VOCLayout):
    """PASCAL-Context val with background: 60 classes."""

    subdir = "VOCdevkit/VOC2010"
    label_dir = "SegmentationClassContext"
    split_dir = "ImageSets/SegmentationContext"
    markers = ("JPEGImages", "SegmentationClassContext")
    default_classes = "context60"
    prepare = (
        "extract VOCtrainval_03-May-2010.tar under data.root, then run "
        "`rim-bench convert context --src PASCAL_CONTEXT_DIR --dst DATA_ROOT` (see datasets/README.md)"
    )


@DATASETS.register("context59")
class Context59(Context60):
    """PASCAL-Context val without background: background pixels are not scored."""

    default_classes = "context59"
    reduce_zero_label = True
