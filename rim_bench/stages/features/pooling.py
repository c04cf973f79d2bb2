"""Region features by masked average pooling of a dense feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rim_bench.core.registry import ENCODERS

MAX_MASK_ELEMENTS = 2**25  # float32 mask pixels converted at once (128 MB)


def masked_average_pool(masks: Tensor, features: Tensor) -> Tensor:
    """Average the features inside each mask, weighting each feature cell by its coverage.

    Masks are downsampled to the feature grid by area, so a cell half inside a region
    counts half: small regions still get a feature, and no feature map is upsampled.

    Args:
        masks: ``(N, H, W) bool`` at image resolution, or an ``(H, W) int64`` region map
            (ids 0..N-1, -1 = none) of disjoint regions.
        features: ``(D, h, w)`` on the image's grid.
    Returns:
        ``(N, D)`` float32; an empty mask gives a zero vector.
    """
    d, h, w = features.shape
    if masks.ndim == 2:
        weights = region_map_weights(masks, h, w).to(features.dtype)  # sparse (N, h*w)
    elif masks.shape[0] == 0:
        return features.new_zeros(0, d)
    else:
        # Masks go to float a chunk at a time: hundreds of full-resolution float masks would not fit.
        chunk = max(1, MAX_MASK_ELEMENTS // masks.shape[-2:].numel())
        weights = torch.cat([
            F.interpolate(part[None].to(features.dtype), size=(h, w), mode="area")[0].flatten(1)
            for part in masks.split(chunk)
        ])  # (N, h*w)
    sums = weights @ features.flatten(1).T  # (N, D)
    totals = weights.sum(1).to_dense() if weights.is_sparse else weights.sum(1)
    return sums / totals[:, None].clamp_min(1e-12)


def region_map_weights(region_map: Tensor, h: int, w: int) -> Tensor:
    """The area weights `masked_average_pool` gives each region's mask, from a region map in
    O(H W) time and memory: a sparse ``(N, h * w)`` float32 matrix.

    Area downsampling (adaptive average pooling) averages feature cell (i, j) over rows
    ⌊iH/h⌋ .. ⌈(i+1)H/h⌉ - 1 and the same for columns, so each pixel lands in at most two
    windows per axis; its region collects 1 / window area from each.
    """
    height, width = region_map.shape
    device = region_map.device
    n = int(region_map.max()) + 1 if region_map.numel() else 0

    def windows(size: int, cells: int) -> tuple[Tensor, Tensor, Tensor]:
        """(pixel, cell) pairs of one axis, and each cell's window length."""
        i = torch.arange(cells, device=device)
        start, end = (i * size) // cells, -((-(i + 1) * size) // cells)
        length = end - start
        cell = torch.repeat_interleave(i, length)
        offset = torch.arange(len(cell), device=device) - torch.repeat_interleave(torch.cumsum(length, 0) - length,
                                                                                   length)
        return start[cell] + offset, cell, length

    ys, rows, row_len = windows(height, h)
    xs, cols, col_len = windows(width, w)
    region = region_map[ys][:, xs]  # (Ry, Rx): every (pixel, window) pair
    cell = rows[:, None] * w + cols[None, :]
    weight = 1.0 / (row_len[rows][:, None] * col_len[cols][None, :]).float()
    keep = region >= 0
    index = torch.stack([region[keep], cell[keep]])
    values = weight.expand_as(region)[keep]
    return torch.sparse_coo_tensor(index, values, (n, h * w), check_invariants=False).coalesce()


@ENCODERS.register("masked_average")
class MaskedAveragePooling:
    """`masked_average_pool` as a stage."""

    def __call__(self, masks: Tensor, features: Tensor) -> Tensor:
        return masked_average_pool(masks, features)
