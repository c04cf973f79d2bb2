"""Dense patch features from DINOv2, on a grid that keeps the image's aspect ratio."""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rim_bench.core.errors import ParamError
from rim_bench.core.params import HubWeights, Range, hub_model_weights, ref
from rim_bench.core.registry import FEATURIZERS
from rim_bench.core.resize import keep_ratio_scale

# ImageNet statistics, as DINOv2 was trained with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def model_input_size(height: int, width: int, short_side: int, patch_size: int) -> tuple[int, int]:
    """mmseg's keep-ratio resize (`keep_ratio_scale`: short side about `short_side`, long side at
    most about 2048), both sides rounded to multiples of the patch size."""
    scale = keep_ratio_scale(height, width, short_side)
    snap = lambda x: max(patch_size, math.floor(x * scale / patch_size + 0.5) * patch_size)  # noqa: E731 - half up
    return snap(height), snap(width)


def model_input(image: Tensor, short_side: int, patch_size: int, mean: Tensor, std: Tensor) -> Tensor:
    """``(3, H, W) uint8`` → ``(1, 3, H', W')`` float, resized by `model_input_size` and normalized
    with the ``(3, 1, 1)`` `mean` and `std` (on their device)."""
    height, width = model_input_size(image.shape[-2], image.shape[-1], short_side, patch_size)
    x = image.to(mean.device, torch.float32)[None] / 255.0
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return (x - mean) / std


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering `length`; the last window ends at the border."""
    if length <= window:
        return [0]
    return sorted(set(range(0, length - window, stride)) | {length - window})


# The "tiny" model's Dinov2Config (random init, tests).
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
        "patch_size": 8, "image_size": 128, "seed": ref("${seed}")}


@FEATURIZERS.register("dinov2")
class DinoV2Featurizer(nn.Module):
    """DINOv2 last-layer patch tokens as a dense feature map.

    Args:
        model: hub id, local directory or ``"tiny"`` (see `rim_bench.stages.backbones.dinov2`).
        input_size: the short side, in pixels, that images are resized to for the model
            (the long side capped at `rim_bench.core.resize.MAX_LONG_SIDE`, see `model_input_size`).
        tiny: the ``"tiny"`` model's `Dinov2Config` fields and seed.
        window: if the resized image is larger than this on either side, it is processed in
            ``window x window`` crops every `stride` pixels and overlapping features are
            averaged; null processes the whole image at once. Both multiples of the patch size.
        stride: the step between windows.
    """

    mean: Tensor  # (3, 1, 1) normalization buffers, registered in __init__
    std: Tensor

    def __init__(self, model: str = "facebook/dinov2-base", input_size: Annotated[int, Range(1)] = 448,
                 tiny: dict = TINY, window: Annotated[int, Range(1)] | None = None,
                 stride: Annotated[int, Range(1)] = 224) -> None:
        super().__init__()
        from rim_bench.stages.backbones.dinov2 import load_dinov2, prefix_tokens

        self.backbone = load_dinov2(model, tiny)
        self.patch_size = int(self.backbone.config.patch_size)
        if input_size < self.patch_size:
            raise ParamError("input_size", f"must be at least the patch size {self.patch_size}, got {input_size}")
        for name, value in (("window", window), ("stride", stride)):
            if value is not None and (value < self.patch_size or value % self.patch_size):
                raise ParamError(name, f"must be a positive multiple of the patch size {self.patch_size}, got {value}")
        if window is not None and stride > window:
            raise ParamError("stride", f"{stride} is larger than window {window}: windows would leave gaps")
        self.input_size = input_size
        self.window = window
        self.stride = stride
        self.num_prefix = prefix_tokens(self.backbone)
        self.feature_dim = int(self.backbone.config.hidden_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    @classmethod
    def weights(cls, params: dict, key: str) -> list[HubWeights]:
        return hub_model_weights(params, key)  # the model folder or hub id to check before a run

    @torch.no_grad()
    def forward(self, image: Tensor) -> Tensor:
        """``(3, H, W) uint8`` → ``(D, h, w) float32`` with ``h, w = H', W' / patch`` after resizing."""
        x = model_input(image, self.input_size, self.patch_size, self.mean, self.std)
        height, width = x.shape[-2:]
        if self.window is None or (height <= self.window and width <= self.window):
            return self._patch_features(x)
        p = self.patch_size
        total = x.new_zeros(self.feature_dim, height // p, width // p)
        count = x.new_zeros(1, height // p, width // p)
        for top in window_starts(height, self.window, self.stride):
            for left in window_starts(width, self.window, self.stride):
                crop = x[..., top:top + self.window, left:left + self.window]
                feats = self._patch_features(crop)
                total[:, top // p: top // p + feats.shape[1], left // p: left // p + feats.shape[2]] += feats
                count[:, top // p: top // p + feats.shape[1], left // p: left // p + feats.shape[2]] += 1
        return total / count

    def _patch_features(self, x: Tensor) -> Tensor:
        """``(1, 3, H, W)`` normalized, sides multiples of the patch → ``(D, H / patch, W / patch)``."""
        tokens = self.backbone(pixel_values=x).last_hidden_state[0, self.num_prefix:]  # (h*w, D)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        assert tokens.shape[0] == h * w, f"expected {h}x{w} patch tokens, got {tokens.shape[0]}"
        return tokens.T.reshape(self.feature_dim, h, w).float()
