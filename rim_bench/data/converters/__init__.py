"""Converters from downloaded benchmark annotations to the label layouts the readers expect.

`rim-bench convert NAME --src RAW --dst ROOT` calls ``CONVERTERS[NAME](Path(RAW), Path(ROOT),
split=..., **options)``, which writes 8-bit single-channel label PNGs (class ids, 255 = ignore)
under ROOT in mmsegmentation's layout and returns a `ConvertReport`. Ids are mapped with lookup
tables copied from the reference converters (each module cites its source); an id a table does
not know is a `DataError`, never a silent guess. Every file is written atomically, so a rerun
skips finished files and resumes an interrupted conversion. Images are never copied.
"""

from __future__ import annotations

from collections.abc import Callable

from rim_bench.data.converters.cityscapes import convert_cityscapes
from rim_bench.data.converters.coco import convert_coco_object, convert_coco_stuff171
from rim_bench.data.converters.common import ConvertReport
from rim_bench.data.converters.context import convert_context

CONVERTERS: dict[str, Callable[..., ConvertReport]] = {
    "context": convert_context,
    "coco_object": convert_coco_object,
    "coco_stuff171": convert_coco_stuff171,
    "cityscapes": convert_cityscapes,
}

__all__ = ["CONVERTERS", "ConvertReport"]
