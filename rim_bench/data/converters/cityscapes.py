"""Cityscapes `labelTrainIds` from the released `labelIds` (gtFine_trainvaltest.zip).

Raw input: ``SRC/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png``, label ids 0..33.
Output: ``DST/cityscapes/gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png``, the 19 train
ids 0..18 and 255 for everything else. When DST/cityscapes is SRC (``--src ROOT/cityscapes
--dst ROOT``), or SRC is DST itself, the outputs are written beside the inputs.
"""

from __future__ import annotations

from pathlib import Path

from rim_bench.data.converters.common import (
    IGNORE,
    ConvertReport,
    Item,
    LabelMap,
    convert_all,
    find_files,
    read_png,
    require_dir,
)

RAW_SUFFIX = "_gtFine_labelIds.png"
OUT_SUFFIX = "_gtFine_labelTrainIds.png"

# label id → trainId for the 19 evaluated classes; every other id 0..33 has trainId 255.
# Source: mcordts/cityscapesScripts, cityscapesscripts/helpers/labels.py, `labels`
# (road 7 → 0, sidewalk 8 → 1, ..., car 26 → 13, ..., bicycle 33 → 18).
TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
# 255 is accepted as well: "license plate" has id -1, which an 8-bit file can only store as 255.
CITYSCAPES = LabelMap.build(TRAIN_IDS, known=(*range(34), IGNORE),
                            expects="a Cityscapes label id (0..33, or 255) from gtFine_trainvaltest.zip")


def convert_cityscapes(src: Path, dst: Path, *, split: str = "val") -> ConvertReport:
    """Write each ``<stem>_gtFine_labelTrainIds.png``, ``(H, W) uint8`` train ids, for one split."""
    raw_dir = require_dir(src / "gtFine" / split, f"the extracted gtFine_trainvaltest.zip: SRC is the folder "
                                                  f"holding gtFine/{split}/<city>/*{RAW_SUFFIX}")
    raw = find_files(raw_dir, f"*/*{RAW_SUFFIX}",
                     f"one folder per city holding *{RAW_SUFFIX}; extract gtFine_trainvaltest.zip into SRC")
    root = src if src.resolve() == dst.resolve() else dst / "cityscapes"
    out = root / "gtFine" / split
    items = [Item(path, out / path.parent.name / (path.name[: -len(RAW_SUFFIX)] + OUT_SUFFIX)) for path in raw]
    return convert_all("cityscapes", items, read_png, CITYSCAPES, root)
