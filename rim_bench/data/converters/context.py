"""PASCAL-Context 59/60 labels from the full 459-class annotation (`trainval.tar.gz`).

Raw input under SRC::

    trainval/<id>.mat          `LabelMap`: (H, W) 459-class ids (1-based lines of labels.txt; 0 = unlabeled)
    labels.txt                 459 lines "id: name"
    trainval_merged.json       PASCAL in Detail; its `images` (`file_name`, `phase`) give the split

Output under DST (mmsegmentation's layout)::

    VOCdevkit/VOC2010/SegmentationClassContext/<id>.png        0 background, 1..59
    VOCdevkit/VOC2010/ImageSets/SegmentationContext/<split>.txt

One label set serves both benchmarks: Context60 scores 0 as the background class, Context59
ignores it (reduce_zero_label). The JPEGs come from the VOC2010 tarball, extracted by the
user to DST/VOCdevkit/VOC2010/JPEGImages; nothing is copied here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io

from rim_bench.core.errors import DataError
from rim_bench.core.io import atomic_write_text
from rim_bench.data.converters.common import ConvertReport, Item, LabelMap, convert_all, require_dir

NUM_FULL_CLASSES = 459

# The 459-class ids of the 59 PASCAL-Context classes, sorted: output class k + 1 is
# CONTEXT59_IDS[k], and the sorted order is also the alphabetical order of their names
# (aeroplane, bag, bed, ..., window, wood). Source: open-mmlab/mmsegmentation,
# tools/dataset_converters/pascal_context.py, `_mapping` (np.sort of 0 and these 59 ids,
# keyed 0..59 so 0 → 0 and these → 1..59).
CONTEXT59_IDS = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98,
    104, 105, 113, 115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308,
    324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)
BACKGROUND = 0

# mmsegmentation reads Detail's masks, which hold only these 59 ids and 0; the full .mat files
# hold all 459, and every id outside the 59 is background there as well.
CONTEXT59 = LabelMap.build(
    {full_id: k + 1 for k, full_id in enumerate(CONTEXT59_IDS)},
    known=range(NUM_FULL_CLASSES + 1),
    expects=f"a PASCAL-Context 459-class id (0..{NUM_FULL_CLASSES})",
    default=BACKGROUND,
    size=NUM_FULL_CLASSES + 1,
)

FETCH_HINT = "download trainval.tar.gz from the PASCAL-Context site and extract it into SRC"


def convert_context(src: Path, dst: Path, *, split: str = "val") -> ConvertReport:
    """Write the Context59/60 label PNGs and split list of one split (``train`` or ``val``).

    Output PNGs are ``(H, W) uint8``: 0 background, 1..59 the classes of `CONTEXT59_IDS` in order.
    The split list is written last, so its presence means every label of the split exists.
    """
    require_dir(src, f"the extracted PASCAL-Context annotations (trainval/, labels.txt); {FETCH_HINT}")
    mat_dir = require_dir(src / "trainval", f"the PASCAL-Context `trainval/` folder of .mat files from "
                                            f"trainval.tar.gz under SRC; {FETCH_HINT}")
    _check_labels_txt(src / "labels.txt")
    ids = split_ids(src / "trainval_merged.json", split)
    root = dst / "VOCdevkit" / "VOC2010"
    items = [Item(mat_dir / f"{i}.mat", root / "SegmentationClassContext" / f"{i}.png") for i in ids]
    report = convert_all("context", items, read_label_map, CONTEXT59, root)
    atomic_write_text(root / "ImageSets" / "SegmentationContext" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    return report


def _check_labels_txt(path: Path) -> None:
    """Confirm `path` is the 459-class label list that CONTEXT59_IDS indexes into (names unused)."""
    if not path.is_file():
        raise DataError(f"'{path}' not found: expected labels.txt from trainval.tar.gz; {FETCH_HINT}")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    ids = [line.split(":", 1)[0].strip() for line in lines]
    if ids != [str(i) for i in range(1, NUM_FULL_CLASSES + 1)]:
        raise DataError(f"'{path}' has {len(lines)} lines, expected the {NUM_FULL_CLASSES} lines '1: name' .. "
                        f"'{NUM_FULL_CLASSES}: name' of the full PASCAL-Context label set; {FETCH_HINT}")


def split_ids(json_path: Path, split: str) -> list[str]:
    """The sorted image ids (e.g. "2008_000002") whose PASCAL in Detail `phase` is `split`."""
    fix = "download trainval_merged.json (PASCAL in Detail annotations) into SRC"
    if not json_path.is_file():
        raise DataError(f"'{json_path}' not found: {fix}")
    try:
        data = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"'{json_path}' is not valid json ({e}); {fix}") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(isinstance(im, dict) and {"file_name", "phase"} <= im.keys()
                                               for im in images):
        raise DataError(f"'{json_path}' lacks an `images` list whose entries have `file_name` and `phase`: "
                        f"expected the PASCAL in Detail trainval_merged.json; {fix}")
    ids = sorted({Path(im["file_name"]).stem for im in images if im["phase"] == split})
    if not ids:
        phases = sorted({str(im["phase"]) for im in images})
        raise DataError(f"'{json_path}' has no images with phase '{split}': choose --split from {phases}")
    return ids


def read_label_map(path: Path) -> np.ndarray:
    """The ``(H, W)`` integer `LabelMap` of one PASCAL-Context .mat file."""
    if not path.is_file():
        raise DataError(f"'{path}' not found: trainval_merged.json lists this image; {FETCH_HINT}")
    try:
        label_map = scipy.io.loadmat(path, variable_names=["LabelMap"]).get("LabelMap")
    except (scipy.io.matlab.MatReadError, NotImplementedError, OSError, ValueError, TypeError) as e:
        raise DataError(f"'{path}' cannot be read as a .mat file ({e}); re-extract it from trainval.tar.gz") from None
    if label_map is None:
        raise DataError(f"'{path}' has no `LabelMap` array: expected a PASCAL-Context .mat file "
                        f"from trainval.tar.gz; re-extract it")
    return label_map
