"""Position embeddings of a ViT pretrained on a square grid, resized for another grid as OpenAI's
CLIP in the segmentation peers and DINO's ``interpolate_pos_encoding`` resize them."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F


def resize_positions(positions: Tensor, rows: int, cols: int) -> Tensor:
    """Position embeddings (1 + rows·cols, D) from `positions` (1 + grid², D), class token first:
    the grid's, resized bicubically by the scale factor (rows + 0.1) / grid (the +0.1 makes the
    floor of the output size the wanted one; the factor, not the size, sets the sampling), and
    kept as they are on the square grid itself."""
    grid = math.isqrt(positions.shape[0] - 1)
    if (rows, cols) == (grid, grid):
        return positions
    cls_pos, patch_pos = positions[:1], positions[1:]
    square = patch_pos.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(square, scale_factor=((rows + 0.1) / grid, (cols + 0.1) / grid), mode="bicubic",
                            align_corners=False)
    return torch.cat([cls_pos, resized.flatten(2)[0].T])
