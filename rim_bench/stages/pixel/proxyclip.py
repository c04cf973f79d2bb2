"""ProxyCLIP's last block (Lan et al., "ProxyCLIP: Proxy Attention Improves CLIP for Open-Vocabulary
Segmentation", ECCV 2024; github.com/mc-lan/ProxyCLIP at e7b767fbc58ea218a3b8ba34cd92db521cc5f2e1,
``open_clip/transformer.py`` ``VisionTransformer.custom_attn`` and ``proxyclip_segmentor.py``
``forward_feature``): the attention between patches comes from a vision foundation model's features
(the proxy: DINO, DINOv2 or SAM), CLIP gives the values.

Step by step, for one window:
  1. the proxy sees the window as CLIP does, re-normalized from CLIP's statistics to ImageNet's
     (`imagenet_input`: its ``self.norm(self.unnorm(img))``, padding included); SAM's input is
     resized to its 1024 x 1024 first (bilinear, `sam_features`);
  2. A = cos(f_i, f_j) between the proxy's patch features; A ← (A − β·mean(A))·γ, the mean over the
     window's whole matrix; entries below 0 masked; softmax over j: one attention for every head
     (`proxy_attention`);
  3. CLIP's values v(ln_1 x) of the patch tokens, resized bilinearly from CLIP's grid to the proxy's;
  4. ``out_proj(A v)`` alone: no residual, no MLP, no class token, on the proxy's grid; ln_post and
     proj follow as for the other peers (`last_block`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rim_bench.stages.backbones.openai_clip import Block

BETA = 1.2  # its encode_image defaults, used on every benchmark
GAMMA = 3.0
# Its UnNormalize (CLIP's statistics on 0..1, open_clip's OPENAI_DATASET_MEAN / STD) and Normalize (ImageNet's).
CLIP_MEAN_01 = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD_01 = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ProxyKind = Literal["dino", "dinov2", "sam"]


def imagenet_input(windows: Tensor) -> Tensor:
    """CLIP-normalized `windows` (n, 3, h, w) -> ImageNet-normalized: x·σ_clip + μ_clip on 0..1,
    then (x − μ_imagenet) / σ_imagenet, per channel."""
    def stats(values: tuple[float, ...]) -> Tensor:
        return torch.tensor(values, dtype=windows.dtype, device=windows.device).view(1, 3, 1, 1)

    unit = windows * stats(CLIP_STD_01) + stats(CLIP_MEAN_01)
    return (unit - stats(IMAGENET_MEAN)) / stats(IMAGENET_STD)


def proxy_attention(features: Tensor, beta: float = BETA, gamma: float = GAMMA) -> Tensor:
    """Attention (n, M, M) over the M = rows·cols patches of proxy `features` (n, C, rows, cols),
    each window's own. Where a patch's every score is below 0 (even its own: β·mean(A) > 1) their
    code gives NaN; here the patch attends to itself alone."""
    f = F.normalize(features.flatten(2), dim=1)
    sim = f.transpose(1, 2) @ f  # (n, M, M) cosines
    scores = (sim - sim.mean((1, 2), keepdim=True) * beta) * gamma
    scores.diagonal(dim1=1, dim2=2).clamp_(min=0.0)  # a patch's own cosine is its best: only all-masked rows move
    return scores.masked_fill(scores < 0, float("-inf")).softmax(-1)


def last_block(block: Block, x: Tensor, grid: tuple[int, int], features: Tensor, beta: float = BETA,
               gamma: float = GAMMA) -> Tensor:
    """Patch tokens (n, rows'·cols', D) on the proxy's grid, for the last block's input `x`
    (n, 1 + rows·cols, D) on CLIP's `grid` and the proxy's `features` (n, C, rows', cols')."""
    _, _, v = block.attn.qkv(block.ln_1(x))  # (n, heads, 1 + rows·cols, d)
    n, heads, _, d = v.shape
    size = features.shape[-2:]
    v = v[:, :, 1:].reshape(n * heads, *grid, d).permute(0, 3, 1, 2)
    v = F.interpolate(v, size=size, mode="bilinear", align_corners=False)
    v = v.reshape(n, heads, d, -1).transpose(2, 3)  # (n, heads, rows'·cols', d)
    attn = proxy_attention(features, beta, gamma).to(v.dtype)[:, None]  # the same for every head
    return block.attn.merge(attn @ v)


class Proxy(nn.Module):
    """The proxy model: CLIP-normalized windows (n, 3, h, w) -> patch features (n, C, rows', cols')."""

    def __init__(self, kind: ProxyKind, net: nn.Module,
                 features: Callable[[Any, Tensor], Tensor] | None = None) -> None:
        """`features(net, images)`: the model's patch features of ImageNet-normalized images
        (default: ``net(images)``)."""
        super().__init__()
        self.kind = kind
        self.net = net
        self.features = features

    def forward(self, windows: Tensor) -> Tensor:
        images = imagenet_input(windows).to(next(self.net.parameters()).dtype)  # in the proxy's own dtype
        return self.net(images) if self.features is None else self.features(self.net, images)


def sam_features(encoder: nn.Module, images: Tensor) -> Tensor:
    """SAM's image embeddings (n, 256, 64, 64) of `images` resized to its input side (1024 x 1024,
    bilinear), as ProxyCLIP feeds SAM."""
    side = int(encoder.img_size)  # type: ignore[arg-type]
    return encoder(F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False))


def load_proxy(kind: ProxyKind, model: str, tiny: dict, key: str = "pixel.clip.proxy_model") -> Proxy:
    """The proxy model: `model` DINO's checkpoint or a transformers folder of it (``dino``, its
    default: ``dino_vitbase8_pretrain.pth``), a hub id or folder (``dinov2``:
    ``facebook/dinov2-with-registers-base``, its choice), a SAM ViT-B checkpoint (``sam``), or
    ``"tiny"``: random, `tiny`'s sizes (``width``, ``layers``, ``patch``, ``grid``, ``seed``)."""
    # Imported here: only ProxyCLIP needs DINO, DINOv2's transformers classes or segment-anything.
    if kind == "dino":
        from rim_bench.stages.backbones.dino import load_dino

        return Proxy(kind, load_dino(model, tiny, key))
    if kind == "dinov2":
        from rim_bench.stages.backbones import dinov2

        sizes = {"hidden_size": tiny["width"], "num_hidden_layers": tiny["layers"], "patch_size": tiny["patch"],
                 "num_attention_heads": max(tiny["width"] // 64, 1), "image_size": tiny["grid"] * tiny["patch"],
                 "seed": tiny["seed"]}
        return Proxy(kind, dinov2.load_dinov2(model, sizes), dinov2.patch_features)
    from rim_bench.stages.backbones.sam import load_sam

    tiny_sam = model == "tiny"
    sam = load_sam("tiny" if tiny_sam else "vit_b", None if tiny_sam else model, int(tiny["seed"]), "cpu", key)
    return Proxy(kind, sam.image_encoder, sam_features)
