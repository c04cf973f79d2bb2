"""Region proposals → a region map; region scores → a label map.

Overlaps: proposals (SAM's overlap; superpixels do not) are resolved once per image into
a region map by painting them large to small, so a small region on top of a large one
keeps its own pixels. The region map depends on the masks alone, so it is cached with
the region features, and a sweep over matching parameters only relabels regions. The label
map is painted from the regions' labels only where it is used (`Prediction.label_map`):
scoring counts pixels by region without it (`rim_bench.run.metrics.region_confusion_matrix`).

Uncovered pixels (no proposal covers them): ``uncovered: none`` leaves them unassigned
(255, a miss for their true class); ``nearest`` gives them the label of the nearest
covered pixel.

Background (VOC21, Context60, COCO-Object): a named rule (``background.rule``), from
background as a class with references of its own to SCLIP's probability threshold; see
`rim_bench.stages.segmenter.background`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from rim_bench.core.params import GIVEN, Block
from rim_bench.core.registry import SEGMENTERS
from rim_bench.core.types import IGNORE_INDEX
from rim_bench.stages.segmenter.background import BackgroundRule

NO_REGION = -1
MAX_MASK_PIXELS = 2**26  # mask pixels keyed at once in `resolve_regions` (64 MB at one byte)


def resolve_regions(masks: Tensor) -> Tensor:
    """Paint masks large to small into one map of region indices.

    Args:
        masks: ``(N, H, W) bool`` proposals, possibly overlapping.
    Returns:
        ``(H, W) int64``: the index of the smallest mask covering each pixel (masks of equal
        area: the higher index), -1 where no mask does.
    """
    n, h, w = masks.shape
    if n == 0:
        return torch.full((h, w), NO_REGION, dtype=torch.long, device=masks.device)
    paint_order = torch.argsort(mask_areas(masks), descending=True, stable=True)
    rank = torch.empty_like(paint_order)
    rank[paint_order] = torch.arange(1, n + 1, device=masks.device)  # 1 = painted first
    # Each pixel keeps the highest rank covering it (the last mask painted over it): a keyed
    # max over the masks, a chunk of masks at a time, one byte a pixel while N < 255.
    key_dtype = torch.uint8 if n < 255 else torch.int32
    keys = rank.to(key_dtype)[:, None, None]
    last = torch.zeros((h, w), dtype=key_dtype, device=masks.device)
    chunk = max(1, MAX_MASK_PIXELS // (h * w))
    for start in range(0, n, chunk):
        part = masks[start:start + chunk]
        part = (part.view(torch.uint8) if n < 255 else part.to(key_dtype)) * keys[start:start + chunk]
        last = torch.maximum(last, part.amax(0))
    return torch.where(last > 0, paint_order[(last.long() - 1).clamp_min(0)], NO_REGION)


def mask_areas(masks: Tensor) -> Tensor:
    """``(N, H, W) bool`` → ``(N,) int64`` pixel counts (numpy's count on a CPU: torch sums
    booleans through int64, ten times slower)."""
    if masks.device.type == "cpu":
        return torch.from_numpy(np.count_nonzero(masks.flatten(1).numpy(), axis=1).astype(np.int64))
    return masks.flatten(1).sum(1)


def fill_uncovered(region_map: Tensor) -> Tensor:
    """``(H, W)`` region map → the same with every uncovered pixel (-1) given the region of the
    nearest covered pixel (Euclidean distance transform); unchanged if all or none are covered."""
    covered = region_map >= 0
    if covered.all() or not covered.any():
        return region_map
    _, (iy, ix) = ndimage.distance_transform_edt(~covered.cpu().numpy(), return_indices=True)
    return region_map[torch.from_numpy(iy).to(region_map.device), torch.from_numpy(ix).to(region_map.device)]


@SEGMENTERS.register("paint")
class PaintSegmenter:
    """Give each region its best class (the label map is painted from them on demand).

    Args:
        min_score: regions whose best class score is below it stay unassigned (255); null keeps all.
        uncovered: ``none`` or ``nearest`` (see the module doc).
        background: the background rule's config (`rim_bench.stages.segmenter.background.BackgroundRule`).
        background_id: the id of the class named ``background`` (given from the vocabulary);
            None: the vocabulary has none and no region becomes background.
    """

    def __init__(self, min_score: float | None = None, uncovered: Literal["none", "nearest"] = "none", *,
                 background: Annotated[dict, Block(BackgroundRule)],
                 background_id: Annotated[int | None, GIVEN] = None) -> None:
        self.min_score = min_score
        self.uncovered = uncovered
        self.background = BackgroundRule(**background, background_id=background_id)

    def __call__(self, region_map: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """``(H, W)`` region map, ``(N, C)`` scores → ``(N,)`` region labels and the ``(H, W)``
        region map they paint (`Prediction.label_map`): uncovered pixels stay -1 (``none``) or
        take their nearest region (``nearest``)."""
        labels, best = self.background(scores, region_map)
        if self.min_score is not None:
            labels = torch.where(best < self.min_score, torch.full_like(labels, IGNORE_INDEX), labels)
        return labels, fill_uncovered(region_map) if self.uncovered == "nearest" else region_map

