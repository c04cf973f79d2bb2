"""Region proposals → a region map; region scores → a label map.

Overlaps: proposals (SAM's overlap; superpixels do not) are resolved once per image into
a region map by painting them large to small, so a small region on top of a large one
keeps its own pixels. The region map depends on the masks alone, so it is cached with
the region features, and a sweep over matching parameters only repaints labels.

Uncovered pixels (no proposal covers them): ``uncovered: none`` leaves them unassigned
(255, a miss for their true class); ``nearest`` gives them the label of the nearest
covered pixel.

Background (VOC21, Context60, COCO-Object): a named rule (``background.rule``), from
background as a class with references of its own to SCLIP's probability threshold; see
`rim_bench.background`.
"""

from __future__ import annotations

import torch
from scipy import ndimage
from torch import Tensor

from rim_bench.background import BackgroundRule
from rim_bench.errors import ParamError
from rim_bench.registry import SEGMENTERS
from rim_bench.types import IGNORE_INDEX

UNCOVERED = ("none", "nearest")
NO_REGION = -1


def resolve_regions(masks: Tensor) -> Tensor:
    """Paint masks large to small into one map of region indices.

    Args:
        masks: ``(N, H, W) bool`` proposals, possibly overlapping.
    Returns:
        ``(H, W) int64``: the index of the smallest mask covering each pixel (masks of equal
        area: the higher index), -1 where no mask does.
    """
    n, h, w = masks.shape
    region_map = torch.full((h, w), NO_REGION, dtype=torch.long, device=masks.device)
    if n == 0:
        return region_map
    order = torch.argsort(masks.flatten(1).sum(1), descending=True, stable=True)  # painting order
    # Paint each mask inside its bounding box: memory O(H W), and many small masks cost little.
    rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W)
    top, bottom = rows.int().argmax(1), h - rows.flip(1).int().argmax(1)
    left, right = cols.int().argmax(1), w - cols.flip(1).int().argmax(1)
    for i, y0, y1, x0, x1 in zip(order.tolist(), *(v[order].tolist() for v in (top, bottom, left, right))):
        box = region_map[y0:y1, x0:x1]
        box[masks[i, y0:y1, x0:x1]] = i
    return region_map


def paint_labels(region_map: Tensor, labels: Tensor, uncovered: str = "none") -> Tensor:
    """``(H, W)`` region map, ``(N,)`` region labels → ``(H, W) int64`` label map (255 = unassigned)."""
    covered = region_map >= 0
    painted = torch.full_like(region_map, IGNORE_INDEX)
    if labels.numel():
        painted[covered] = labels.to(region_map.device)[region_map[covered]]
    if uncovered == "nearest" and covered.any() and not covered.all():
        # Index of the nearest covered pixel, for every pixel (Euclidean distance transform).
        _, (iy, ix) = ndimage.distance_transform_edt(~covered.cpu().numpy(), return_indices=True)
        painted = painted[torch.from_numpy(iy).to(painted.device), torch.from_numpy(ix).to(painted.device)]
    return painted


@SEGMENTERS.register("paint")
class PaintSegmenter:
    """Give each region its best class and paint the label map.

    Args:
        min_score: regions whose best class score is below it stay unassigned (255); null keeps all.
        uncovered: ``none`` or ``nearest`` (see the module doc).
        background: the background rule's config (`rim_bench.background.BackgroundRule`).
        background_id: the id of the class named ``background`` (given from the vocabulary);
            None: the vocabulary has none and no region becomes background.
    """

    def __init__(self, min_score: float | None, uncovered: str, background: dict,
                 background_id: int | None = None) -> None:
        if uncovered not in UNCOVERED:
            raise ParamError("uncovered", f"unknown '{uncovered}' (choose {', '.join(UNCOVERED)})")
        self.min_score = min_score
        self.uncovered = uncovered
        self.background = BackgroundRule(**background, background_id=background_id)

    def __call__(self, region_map: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """``(H, W)`` region map, ``(N, C)`` scores → ``(H, W)`` label map, ``(N,)`` region labels."""
        labels, best = self.background(scores, region_map)
        if self.min_score is not None:
            labels = torch.where(best < self.min_score, torch.full_like(labels, IGNORE_INDEX), labels)
        return paint_labels(region_map, labels, self.uncovered), labels

