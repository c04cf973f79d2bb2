"""COCO-Object and COCO-Stuff-171 labels from COCO-Stuff-164k's `stuffthingmaps_trainval2017.zip`.

Raw input: ``SRC/<split>2017/<id>.png`` (SRC may also be the folder holding
``stuffthingmaps_trainval2017/``, or the ``<split>2017/`` folder itself): single-channel, values
are 0-based COCO-Stuff ids, things 0..89 (with gaps), stuff 91..181, and 255 = unlabeled.

Output beside each other under ``DST/coco_stuff164k/annotations/<split>2017/``::

    <id>_labelTrainIds.png      COCO-Stuff-171: 0..170, 255 ignore
    <id>_instanceTrainIds.png   COCO-Object: 0 background, 1..80 things

The images are not copied: the user extracts val2017.zip to DST/coco_stuff164k/images/.
"""

from __future__ import annotations

from pathlib import Path

from rim_bench.core.errors import ConfigError, DataError
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

# The 11 COCO-Stuff ids that no COCO 2017 class uses (0-based). Source: open-mmlab/mmsegmentation,
# tools/dataset_converters/coco_stuff164k.py, `clsID_to_trID`: it lists every id 0..181 except
# these, in increasing order, as 0..170.
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
USED_IDS = tuple(i for i in range(182) if i not in UNUSED_IDS)
THING_IDS = tuple(i for i in USED_IDS if i < 91)
STUFF_IDS = tuple(i for i in USED_IDS if i >= 91)
KNOWN_IDS = (*range(182), IGNORE)
EXPECTS = "a 0-based COCO-Stuff id (0..181) or 255 (unlabeled) from stuffthingmaps_trainval2017.zip"
BACKGROUND = 0

# mmsegmentation leaves an unused id unchanged (it is absent from its table); here it is
# ignored. The two differ only on a file that holds one.
COCO_STUFF171 = LabelMap.build({raw: k for k, raw in enumerate(USED_IDS)}, KNOWN_IDS, EXPECTS)

# COCO-Object: the 80 things in increasing order → 1..80. Source: NVlabs/GroupViT,
# convert_dataset/convert_coco_object.py (the same table + 1 for ids <= 90, 0 for stuff).
COCO_OBJECT_THINGS = {raw: k + 1 for k, raw in enumerate(THING_IDS)}
UNLABELED_CHOICES = ("background", "ignore")


def convert_coco_stuff171(src: Path, dst: Path, *, split: str = "val") -> ConvertReport:
    """Write ``<id>_labelTrainIds.png``, ``(H, W) uint8``: the 171 used ids in order → 0..170,
    unused ids and 255 (unlabeled) → 255."""
    return _convert("coco_stuff171", src, dst, split, COCO_STUFF171, "_labelTrainIds.png")


def convert_coco_object(src: Path, dst: Path, *, split: str = "val", unlabeled: str = "background") -> ConvertReport:
    """Write ``<id>_instanceTrainIds.png``, ``(H, W) uint8``: the 80 thing ids in order → 1..80,
    stuff ids → 0 (background).

    `unlabeled` decides the pixels COCO-Stuff leaves unlabeled (255) and the unused ids:
    ``"background"`` (default) maps them to 0, reproducing GroupViT/TCL's converter, which
    thereby scores unlabeled pixels as background (its 255 → 256 wraps to 0 in uint8);
    ``"ignore"`` maps them to 255 so they are not scored. Both write the same file names, and
    existing files are kept: delete the old outputs before converting with the other choice.
    """
    if unlabeled == "background":
        labels = LabelMap.build(COCO_OBJECT_THINGS, KNOWN_IDS, EXPECTS, default=BACKGROUND)
    elif unlabeled == "ignore":
        stuff = dict.fromkeys(STUFF_IDS, BACKGROUND)
        labels = LabelMap.build({**COCO_OBJECT_THINGS, **stuff}, KNOWN_IDS, EXPECTS, default=IGNORE)
    else:
        raise ConfigError(f"coco_object: unlabeled='{unlabeled}' is not one of {UNLABELED_CHOICES}")
    return _convert("coco_object", src, dst, split, labels, "_instanceTrainIds.png")


def _convert(name: str, src: Path, dst: Path, split: str, labels: LabelMap, suffix: str) -> ConvertReport:
    """Map every raw map of the split to ``<id><suffix>`` under DST/coco_stuff164k."""
    folder = f"{split}2017"
    # Raw maps are named <digits>.png; the pattern skips *TrainIds.png that a converter
    # (this one or mmsegmentation's in-place layout) wrote into the same folder.
    raw = find_files(_raw_dir(src, folder), "*[0-9].png",
                     "the COCO-Stuff label maps <image id>.png; extract stuffthingmaps_trainval2017.zip")
    root = dst / "coco_stuff164k"
    out = root / "annotations" / folder
    items = [Item(path, out / f"{path.stem}{suffix}") for path in raw]
    return convert_all(name, items, read_png, labels, root)


def _raw_dir(src: Path, folder: str) -> Path:
    """The folder of raw maps: SRC/<folder>, SRC/stuffthingmaps_trainval2017/<folder>, or SRC itself."""
    expected = (f"the extracted stuffthingmaps_trainval2017.zip: a folder holding {folder}/ "
                f"(or stuffthingmaps_trainval2017/{folder}/), or {folder}/ itself")
    require_dir(src, expected)
    for candidate in (src / folder, src / "stuffthingmaps_trainval2017" / folder):
        if candidate.is_dir():
            return candidate
    if src.name == folder:
        return src
    raise DataError(f"'{src / folder}' not found: expected {expected}")
