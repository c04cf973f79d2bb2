"""Region features by masked average pooling of a dense feature map."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rim_bench.registry import ENCODERS


def masked_average_pool(masks: Tensor, features: Tensor) -> Tensor:
    """Average the features inside each mask, weighting each feature cell by its coverage.

    Masks are downsampled to the feature grid by area, so a cell half inside a region
    counts half: small regions still get a feature, and no feature map is upsampled.

    Args:
        masks: ``(N, H, W) bool`` at image resolution.
        features: ``(D, h, w)`` on the image's grid.
    Returns:
        ``(N, D)`` float32; an empty mask gives a zero vector.
    """
    d, h, w = features.shape
    if masks.shape[0] == 0:
        return features.new_zeros(0, d)
    weights = F.interpolate(masks[None].to(features.dtype), size=(h, w), mode="area")[0].flatten(1)  # (N, h*w)
    sums = weights @ features.flatten(1).T  # (N, D)
    return sums / weights.sum(1, keepdim=True).clamp_min(1e-12)


@ENCODERS.register("masked_average")
class MaskedAveragePooling:
    """`masked_average_pool` as a stage."""

    def __call__(self, masks: Tensor, features: Tensor) -> Tensor:
        return masked_average_pool(masks, features)
