"""The peers' test pixels: mmseg's test pipeline as SCLIP, NACLIP, ClearCLIP and ProxyCLIP run it
(``LoadImageFromFile``, ``Resize(scale=(2048, S), keep_ratio=True)``, then ``SegDataPreProcessor``
with ``bgr_to_rgb=True``), in OpenCV as mmcv 2.x runs it. The only module that imports cv2.

Each line below reproduces one step (mmcv 2.2.0, ``mmcv/transforms/loading.py`` and
``processing.py``, ``mmcv/image/io.py`` and ``geometric.py``):

- `imread`: ``LoadImageFromFile`` → ``mmcv.imfrombytes(bytes, flag='color', backend='cv2')`` →
  ``cv2.imdecode(buffer, cv2.IMREAD_COLOR)``: 3 channels (grey repeated, alpha dropped, 16 bits
  shifted to 8), the EXIF orientation applied, BGR; then the preprocessor's ``bgr_to_rgb``.
- `rescaled_size`: ``Resize._resize_img`` → ``mmcv.imrescale`` → ``rescale_size``: one factor,
  min(2048 / long side, S / short side) (`rim_bench.core.resize.keep_ratio_scale`), each side
  ``int(side * factor + 0.5)`` (``_scale_size``).
- `rescale`: ``imresize(..., interpolation='bilinear', backend='cv2')`` →
  ``cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)`` on the uint8 image: OpenCV's
  fixed-point bilinear, not a float resize rounded (they differ by 1 on ~13% of values).

RIM's region path does not use this module: its featurizers resize float tensors with torch
(`rim_bench.stages.features`), and every method reads benchmark images with PIL
(`rim_bench.data.base.read_image`), which decodes JPEG and PNG to the same pixels as cv2 but
leaves the EXIF orientation unapplied (see docs/peers.md).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from rim_bench.core.errors import DataError
from rim_bench.core.resize import keep_ratio_scale


def imread(path: Path) -> Tensor:
    """An image file as mmcv's ``LoadImageFromFile`` reads it, in RGB: (3, H, W) uint8."""
    try:
        buffer = np.frombuffer(Path(path).read_bytes(), np.uint8)
    except OSError as e:
        raise DataError(f"'{path}' cannot be read ({e.strerror or e})") from None
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if bgr is None:
        raise DataError(f"'{path}' cannot be decoded as an image by OpenCV: re-download or re-convert it")
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).contiguous()


def rescaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) after mmseg's keep-ratio Resize: short side `short_side`, long side at most 2048 (at least
    1 pixel: mmcv's rounding gives 0 x 2048 for a 1 x 5000 image, which cv2 refuses)."""
    factor = keep_ratio_scale(height, width, short_side)
    return max(int(height * factor + 0.5), 1), max(int(width * factor + 0.5), 1)


def rescale(image: Tensor, short_side: int) -> Tensor:
    """`image` (3, H, W) uint8 resized as mmcv's ``Resize(scale=(2048, short_side),
    keep_ratio=True)`` does: (3, h, w) uint8, on `image`'s device (the resize runs on the CPU)."""
    height, width = image.shape[-2:]
    size = rescaled_size(height, width, short_side)
    if size == (height, width):  # cv2.resize to the same size copies the image
        return image
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    resized = cv2.resize(hwc, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(resized.reshape(size[0], size[1], -1)).permute(2, 0, 1).contiguous().to(image.device)
