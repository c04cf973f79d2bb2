"""A regular grid of square cells as "proposals": dense, per-cell labelling without SAM.

With the CLIP featurizer this is the MaskCLIP-style dense baseline: every cell of about a
patch's size takes the class of its pooled feature. MaskCLIP upsamples per-patch logits
bilinearly instead; cells give the same labels at cell resolution.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from rim_bench.core.params import Range
from rim_bench.core.registry import PROPOSERS


@PROPOSERS.register("grid")
class GridProposer:
    """Square cells of `cell_size` pixels (smaller at the right and bottom borders).

    Args:
        cell_size: the side of a cell in image pixels.
    """

    def __init__(self, cell_size: Annotated[int, Range(1)] = 16) -> None:
        self.cell_size = cell_size

    def __call__(self, image: Tensor) -> Tensor:
        """``(3, H, W)`` → ``(H, W) int64`` region map of N = ⌈H / cell⌉ · ⌈W / cell⌉ cells, row-major.

        A region map, not N masks: a 2048 x 1024 image has 8192 cells of 16 px, whose masks
        alone would take 17 GB.
        """
        h, w = image.shape[-2:]
        rows = torch.arange(h) // self.cell_size
        cols = torch.arange(w) // self.cell_size
        return rows[:, None] * int(cols[-1] + 1) + cols[None]
