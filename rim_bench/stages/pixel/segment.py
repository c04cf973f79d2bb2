"""A peer method end to end: image (3, H, W) uint8 -> label map (H, W), as the peer's
segmentor computes it (resize by the short side as mmcv does, normalize, windows, dense logits
against the query names' text embeddings, back to the image's size, PAMR where set, decide)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from rim_bench.core.cache_files import file_digest
from rim_bench.core.errors import ConfigError
from rim_bench.data.peer_pixels import rescale
from rim_bench.stages.backbones.openai_clip import (
    OPENAI_MEAN,
    OPENAI_STD,
    Block,
    BpeTokenizer,
    OpenAIClip,
    find_bpe,
    load_openai_clip,
    to_half,
)
from rim_bench.stages.pixel import clearclip, maskclip, naclip, proxyclip, sclip
from rim_bench.stages.pixel.decide import class_probabilities, label_map
from rim_bench.stages.pixel.pamr import pamr
from rim_bench.stages.pixel.protocol import PixelSettings
from rim_bench.stages.pixel.text import cached_text_embeddings, imagenet_templates, read_class_file
from rim_bench.stages.pixel.windows import slide

LAST_BLOCKS: dict[str, Callable[..., Tensor]] = {
    "maskclip": maskclip.last_block, "sclip": sclip.last_block, "naclip": naclip.last_block,
    "clearclip": clearclip.last_block, "proxyclip": proxyclip.last_block,
}
# The methods whose peer code casts the whole test image to the model's dtype before the windows
# (ClearCLIP's `predict`: inputs.half()), so that its windows' logits are summed in it; SCLIP and
# NACLIP cast each window inside encode_image and sum in float32.
CASTS_INPUTS = {"clearclip", "maskclip"}
# trainer.precision's number -> dtype ("16-mixed", "16-true", "16" -> float16, "bf16-mixed" -> bfloat16, ...).
PRECISIONS = {"16": torch.float16, "bf16": torch.bfloat16, "32": torch.float32, "64": torch.float64}


def run_dtype(device_type: str, precision: str | int | None = None) -> torch.dtype:
    """The dtype a peer method runs in on a device of `device_type` ("cuda", "cpu", ...):
    `precision` (``trainer.precision``) where it is set; unset (null), the peer's own: float16 on
    CUDA (SCLIP and NACLIP through ``clip.load`` on CUDA, ClearCLIP ``precision='fp16'``),
    float32 elsewhere.

    Raises:
        ConfigError: a precision without a dtype here (e.g. transformer-engine).
    """
    if precision is None:
        return torch.float16 if device_type == "cuda" else torch.float32
    number = str(precision).split("-")[0]
    if number not in PRECISIONS:
        raise ConfigError(f"trainer.precision: {precision!r} has no dtype for a peer method (choose 16-mixed, "
                          f"bf16-mixed, 32-true, 64-true, or null: the peer's own, float16 on CUDA)")
    return PRECISIONS[number]


def in_dtype(model: OpenAIClip, dtype: torch.dtype) -> OpenAIClip:
    """`model` in `dtype`, in place: float16 and bfloat16 as ``clip`` converts it (`to_half`:
    LayerNorms and embeddings stay float32), float64 all of it; float32 leaves it as it is."""
    if dtype in (torch.float16, torch.bfloat16):
        return to_half(model, dtype)
    return model.to(dtype) if dtype == torch.float64 else model


def normalize(image: Tensor) -> Tensor:
    """(3, H, W) 0..255 RGB -> CLIP-normalized float."""
    mean = torch.tensor(OPENAI_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(OPENAI_STD, device=image.device).view(3, 1, 1)
    return (image.float() - mean) / std


def prepare(image: Tensor, short_side: int) -> Tensor:
    """Normalized test image (3, h, w) from `image` (3, H, W) uint8 RGB: resized as mmseg's test
    pipeline resizes it (`rescale`: cv2's bilinear on the uint8 image, mmcv's size rounding), then
    normalized as the peers' ``SegDataPreProcessor`` normalizes it."""
    return normalize(rescale(image, short_side))


class PixelSegmenter:
    """One peer method on one benchmark: the CLIP model, the query names' embeddings, the settings."""

    def __init__(self, model: OpenAIClip, tokenizer: BpeTokenizer, settings: PixelSettings, model_key: str,
                 cache_dir: Path | None = None, names: list[str] | None = None,
                 query_class: list[int] | None = None, chunk: int = 16, proxy: proxyclip.Proxy | None = None) -> None:
        """`names` and `query_class` (the class index of each name) default to the settings'
        class file; `model_key` names the weights in the text cache's key; `chunk` windows per forward;
        `proxy` the proxy model ProxyCLIP's attention comes from (only for it)."""
        if (settings.method == "proxyclip") != (proxy is not None):
            raise ConfigError(f"pixel.clip.method: {settings.method} {'needs' if proxy is None else 'takes no'} "
                              f"proxy model (ProxyCLIP's attention comes from one; the other methods' from CLIP)")
        if names is None:
            names, query_class = read_class_file(settings.class_file, settings.separator)
        self.model = model
        self.settings = settings
        self.chunk = chunk
        self.query_class = torch.tensor(query_class if query_class is not None else range(len(names)))
        self.num_classes = int(self.query_class.max()) + 1
        self.queries = cached_text_embeddings(model, tokenizer, names, imagenet_templates(), model_key, cache_dir)
        self.last_block = LAST_BLOCKS[settings.method]
        self.proxy = proxy

    @classmethod
    def from_checkpoint(cls, path: Path, settings: PixelSettings, bpe: Path | None = None,
                        cache_dir: Path | None = None, **kwargs: object) -> PixelSegmenter:
        """From an OpenAI CLIP checkpoint file (TorchScript archive or state dict)."""
        return cls(load_openai_clip(path), BpeTokenizer(find_bpe(bpe)), settings, file_digest(path), cache_dir,
                   **kwargs)  # type: ignore[arg-type]

    @torch.no_grad()
    def dense(self, windows: Tensor) -> Tensor:
        """Query logits (n, Q, rows, cols) on the patch grid of normalized `windows` (n, 3, h, w):
        cosine of each patch token (after the method's last block, ln_post, proj) and each name."""
        visual = self.model.visual
        x, grid = visual.tokens_before_last(windows)
        block: Block = visual.last_block
        s = self.settings
        if self.proxy is not None:  # ProxyCLIP: patch tokens alone, on the proxy's grid
            features = self.proxy(windows)
            tokens = self.last_block(block, x, grid, features, s.beta, s.gamma)
            grid = tuple(features.shape[-2:])
        else:
            params = {"gaussian_std": s.gaussian_std} if s.method == "naclip" else {}
            tokens = self.last_block(block, x, grid, **params)[:, 1:]
        tokens = F.normalize(visual.project(tokens), dim=-1)
        return (tokens @ self.queries.to(tokens).T).transpose(1, 2).reshape(len(windows), -1, *grid)

    @torch.no_grad()
    def logits(self, image: Tensor) -> Tensor:
        """Query logits (Q, H, W) of `image` (3, H, W) uint8, at its own size (PAMR-refined where set)."""
        s = self.settings
        size = tuple(image.shape[-2:])
        test = prepare(image, s.short_side)
        if s.method in CASTS_INPUTS:
            test = test.to(self.model.dtype)
        patch = self.model.visual.patch
        pad = s.pad_multiple or (patch if s.pad_to_patch else 0)
        logits = slide(test, s.crop, s.stride, self.dense, self.chunk, pad, patch)
        logits = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)
        if s.pamr_steps:  # on the guide's dtype, then back to the model's (SCLIP's, NACLIP's `.to(self.dtype)`)
            guide = F.interpolate(test[None], size=size, mode="bilinear", align_corners=False)
            logits = pamr(guide, logits.to(guide.dtype), s.pamr_steps, s.pamr_dilations).to(self.model.dtype)
        return logits[0]

    def resolved_settings(self) -> dict[str, str]:
        """What ran, for metrics.json: the dtype of the model, the text embeddings and the windows."""
        return {"pixel.clip.dtype": str(self.model.dtype).removeprefix("torch.")}

    def __call__(self, image: Tensor) -> Tensor:
        """Label map (H, W) long of `image` (3, H, W) uint8 RGB."""
        s = self.settings
        logits = self.logits(image)
        probs = class_probabilities(logits, self.query_class.to(logits.device), self.num_classes, s.logit_scale)
        return label_map(probs, s.prob_thd, s.area_thd)

