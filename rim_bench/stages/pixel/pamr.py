"""PAMR, pixel-adaptive mask refinement (Araslanov and Roth, "Single-Stage Semantic
Segmentation from Image Labels", CVPR 2020), as NACLIP applies it to its logits.

Each pixel's neighbours at the 8 offsets of each dilation weigh it by image similarity: for
every channel, -|x_p - x_n| / (1e-8 + 0.1 σ_p), with σ_p the standard deviation of the 3x3
dilated neighbourhoods of p (all dilations, the centre included once per dilation), averaged
over the channels, softmax over the neighbours; then the mask is replaced by the weighted sum of
its neighbours' values, `steps` times. Borders repeat the edge pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def neighbours(x: Tensor, dilations: tuple[int, ...], centre: bool = False) -> Tensor:
    """The values at the dilated 3x3 offsets of every pixel: (B, C, P, H, W) for `x` (B, C, H, W);
    P = 8 per dilation, 9 with the centre."""
    _, _, h, w = x.shape
    offsets = OFFSETS + [(0, 0)] if centre else OFFSETS
    out = []
    for d in dilations:
        padded = F.pad(x, [d] * 4, mode="replicate")
        out += [padded[:, :, d + dy * d:d + dy * d + h, d + dx * d:d + dx * d + w] for dy, dx in offsets]
    return torch.stack(out, 2)


def pamr(image: Tensor, mask: Tensor, steps: int = 10, dilations: tuple[int, ...] = (8, 16)) -> Tensor:
    """Refined `mask` (B, C, H, W) (logits or probabilities) guided by `image` (B, 3, H, W)."""
    std = neighbours(image, dilations, centre=True).std(2, keepdim=True)
    diff = (image.unsqueeze(2) - neighbours(image, dilations)).abs()
    affinity = (-diff / (1e-8 + 0.1 * std)).mean(1, keepdim=True).softmax(2)  # (B, 1, P, H, W)
    _, _, h, w = mask.shape
    for _ in range(steps):  # neighbour by neighbour: C x P full-size maps would not fit in memory
        refined = torch.zeros_like(mask)
        p = 0
        for d in dilations:
            padded = F.pad(mask, [d] * 4, mode="replicate")
            for dy, dx in OFFSETS:
                refined += padded[:, :, d + dy * d:d + dy * d + h, d + dx * d:d + dx * d + w] * affinity[:, :, p]
                p += 1
        mask = refined
    return mask
