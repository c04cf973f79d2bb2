"""Region scores → label map."""

from __future__ import annotations

import torch
from torch import Tensor

from rim_bench.registry import SEGMENTERS
from rim_bench.types import IGNORE_INDEX


def paint_regions(masks: Tensor, labels: Tensor) -> Tensor:
    """Paint region labels large to small, so a small region on top of a large one keeps its label.

    Args:
        masks: ``(N, H, W) bool``.
        labels: ``(N,) int64``; 255 leaves the region unassigned.
    Returns:
        ``(H, W) int64``; pixels no region covers are 255.
    """
    n, h, w = masks.shape
    if n == 0:
        return torch.full((h, w), IGNORE_INDEX, dtype=torch.long, device=masks.device)
    area = masks.flatten(1).sum(1)
    # Rank 1 = largest region; at each pixel the covering region with the highest rank
    # (the smallest) wins. Ties keep the lower index.
    rank = torch.empty_like(area)
    rank[torch.argsort(area, descending=True, stable=True)] = torch.arange(1, n + 1, device=masks.device)
    winner = (masks * rank[:, None, None]).argmax(0)  # (H, W)
    painted = labels[winner]
    return torch.where(masks.any(0), painted, torch.full_like(painted, IGNORE_INDEX))


@SEGMENTERS.register("paint")
class PaintSegmenter:
    """Give each region its best class and paint the regions into a label map.

    Args:
        min_score: regions whose best class score is below it stay unassigned (255);
            null keeps every region.
    """

    def __init__(self, min_score: float | None = None) -> None:
        self.min_score = min_score

    def __call__(self, masks: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, H, W)``, ``(N, C)`` → ``(H, W)`` label map, ``(N,)`` region labels."""
        if scores.shape[0] != masks.shape[0]:
            raise ValueError(f"{masks.shape[0]} masks but {scores.shape[0]} score rows")
        best, labels = scores.max(1)
        if self.min_score is not None:
            labels = torch.where(best < self.min_score, torch.full_like(labels, IGNORE_INDEX), labels)
        return paint_regions(masks, labels), labels
