"""SLIC superpixels as region proposals: a cheap, model-free stand-in for SAM."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from skimage.segmentation import slic
from torch import Tensor

from rim_bench.core.params import POSITIVE, Range
from rim_bench.core.registry import PROPOSERS


@PROPOSERS.register("superpixels")
class SuperpixelProposer:
    """Partition the image into SLIC superpixels; every pixel belongs to exactly one region.

    Args:
        n_segments: approximate number of superpixels per image.
        compactness: colour vs space trade-off; higher gives more regular regions.
        sigma: Gaussian smoothing before segmenting, in pixels.
    """

    def __init__(self, n_segments: Annotated[int, Range(1)] = 64, compactness: Annotated[float, POSITIVE] = 10.0,
                 sigma: Annotated[float, Range(0)] = 1.0) -> None:
        self.n_segments = n_segments
        self.compactness = compactness
        self.sigma = sigma

    def __call__(self, image: Tensor) -> Tensor:
        """``(3, H, W) uint8`` → ``(N, H, W) bool``, disjoint and covering the image."""
        rgb = image.permute(1, 2, 0).cpu().numpy()
        segments = slic(
            rgb, n_segments=self.n_segments, compactness=self.compactness, sigma=self.sigma,
            start_label=0, channel_axis=-1,
        )
        ids = np.unique(segments)
        return torch.from_numpy(segments)[None] == torch.from_numpy(ids)[:, None, None]
