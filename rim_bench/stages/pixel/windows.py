"""Sliding windows over an image, all run in one batched forward (in chunks), their logits
averaged where windows overlap.

The windows are the peers' (mmseg's ``slide_inference``): a grid with the given stride whose
last row and column are shifted back inside the image, so every window is crop x crop (or the
image's side where it is smaller). Each window's logits are interpolated to the window's size
and added into one (Q, H, W) sum with a count map; no window is padded to the whole image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

Box = tuple[int, int, int, int]  # y1, y2, x1, x2


def axis_starts(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of the windows along one side of `size` pixels."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for i in range(count):
        end = min(i * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def window_boxes(height: int, width: int, crop: int, stride: int) -> list[Box]:
    """The windows of an image, row by row; `crop` 0 means one window: the whole image."""
    if crop <= 0:
        return [(0, height, 0, width)]
    return [(y1, y2, x1, x2) for y1, y2 in axis_starts(height, crop, stride)
            for x1, x2 in axis_starts(width, crop, stride)]


def patch_padding(height: int, width: int, patch: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zeros that make a crop a multiple of `patch` (half each side,
    the extra pixel right or bottom), as ClearCLIP pads its crops."""
    dx, dy = -width % patch, -height % patch
    return dx // 2, dx - dx // 2, dy // 2, dy - dy // 2


def short_side_padding(height: int, width: int, side: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zeros that make a crop at least `side` on each side, placed as
    `patch_padding` places them."""
    dx, dy = max(side - width, 0), max(side - height, 0)
    return dx // 2, dx - dx // 2, dy // 2, dy - dy // 2


def slide(image: Tensor, crop: int, stride: int, dense: Callable[[Tensor], Tensor], chunk: int = 16,
          pad_to_patch: int = 0, min_side: int = 0) -> Tensor:
    """Window-averaged logits (Q, H, W) of a normalized image (3, H, W).

    `dense` maps windows (n, 3, h, w) to logits (n, Q, h', w') on their patch grid; each is
    interpolated (bilinear) to its window's size. With `pad_to_patch` the windows are padded to
    a multiple of it first, else a side under `min_side` (one patch: a 17 x 9000 image is 4 pixels
    high at short side 336, where the peers' patch convolution fails) is padded to it; the logits
    are cut back to the window.
    """
    _, height, width = image.shape
    boxes = window_boxes(height, width, crop, stride)
    total: Tensor | None = None
    count = image.new_zeros(1, height, width)
    for start in range(0, len(boxes), chunk):
        part = boxes[start:start + chunk]
        windows = torch.stack([image[:, y1:y2, x1:x2] for y1, y2, x1, x2 in part])
        h, w = windows.shape[-2:]
        pad = patch_padding(h, w, pad_to_patch) if pad_to_patch else short_side_padding(h, w, min_side)
        logits = dense(F.pad(windows, pad) if any(pad) else windows)
        logits = F.interpolate(logits, size=(h + pad[2] + pad[3], w + pad[0] + pad[1]), mode="bilinear",
                               align_corners=False)[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]
        if total is None:
            total = image.new_zeros(logits.shape[1], height, width)
        for (y1, y2, x1, x2), window in zip(part, logits):
            total[:, y1:y2, x1:x2] += window
            count[:, y1:y2, x1:x2] += 1
    assert total is not None  # an image has at least one window
    return total / count
