"""Region features by masked average pooling of a dense feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rim_bench.registry import ENCODERS

MAX_MASK_ELEMENTS = 2**25  # float32 mask pixels converted at once (128 MB)


def masked_average_pool(masks: Tensor, features: Tensor) -> Tensor:
    """Average the features inside each mask, weighting each feature cell by its coverage.

    Masks are downsampled to the feature grid by area, so a cell half inside a region
    counts half: small regions still get a feature, and no feature map is upsampled.

    Args:
        masks: ``(N, H, W) bool`` at image resolution, or an ``(H, W) int64`` region map
            (ids 0..N-1, -1 = none) whose masks are made a chunk at a time.
        features: ``(D, h, w)`` on the image's grid.
    Returns:
        ``(N, D)`` float32; an empty mask gives a zero vector.
    """
    d, h, w = features.shape
    is_map = masks.ndim == 2
    n = (int(masks.max()) + 1 if masks.numel() else 0) if is_map else masks.shape[0]
    if n == 0:
        return features.new_zeros(0, d)
    # Masks go to float a chunk at a time: hundreds of full-resolution float masks would not fit.
    chunk = max(1, MAX_MASK_ELEMENTS // masks.shape[-2:].numel())
    parts = ((masks[None] == torch.arange(s, min(n, s + chunk), device=masks.device)[:, None, None]
              for s in range(0, n, chunk)) if is_map else masks.split(chunk))
    weights = torch.cat([
        F.interpolate(part[None].to(features.dtype), size=(h, w), mode="area")[0].flatten(1) for part in parts
    ])  # (N, h*w)
    sums = weights @ features.flatten(1).T  # (N, D)
    return sums / weights.sum(1, keepdim=True).clamp_min(1e-12)


@ENCODERS.register("masked_average")
class MaskedAveragePooling:
    """`masked_average_pool` as a stage."""

    def __call__(self, masks: Tensor, features: Tensor) -> Tensor:
        return masked_average_pool(masks, features)
