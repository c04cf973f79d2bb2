"""DINO ViTs (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021)
in our own modules, written from DINO's ``vision_transformer.py`` (github.com/facebookresearch/dino at
7c446df): pre-LN blocks (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1`` / GELU /
``mlp.fc2``), a class token, position embeddings resized for other grids by the scale factor
(rows + 0.1) / grid (`resize_positions`, DINO's ``interpolate_pos_encoding``), LayerNorm eps 1e-6,
heads 64 wide.

`load_dino` reads DINO's own checkpoint (``dino_vitbase8_pretrain.pth``: the file
``torch.hub.load('facebookresearch/dino:main', 'dino_vitb8')`` downloads, keys as DINO names them) or
a transformers folder of the same weights (``facebook/dino-vitb8``: ``model.safetensors`` with
ViTModel's keys, renamed here); the architecture is read from the tensors' shapes. ``"tiny"`` is a
random one (seeded values, independent of torch's initializers) for tests.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rim_bench.core.errors import ConfigError, one_line
from rim_bench.stages.backbones.positions import resize_positions

HEAD_DIM = 64  # DINO's ViT-S and ViT-B heads are 64 wide
LAYER_NORM_EPS = 1e-6  # DINO's partial(nn.LayerNorm, eps=1e-6)
# transformers' ViTModel keys (as facebook/dino-vitb8 stores them) -> DINO's; q, k and v are stacked after.
HF_KEYS = [(r"^embeddings\.cls_token$", "cls_token"), (r"^embeddings\.position_embeddings$", "pos_embed"),
           (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
           (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
           (r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.", r"blocks.\1.attn.\2."),
           (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
           (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
           (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
           (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
           (r"^layernorm\.", "norm.")]


@dataclass(frozen=True)
class DinoArch:
    """A DINO ViT's sizes."""

    width: int
    layers: int
    patch: int
    grid: int  # the pretraining grid: grid x grid patches (28 for ViT-B/8 at 224)
    mlp: int  # the MLP's hidden width

    @classmethod
    def of(cls, state: dict[str, Tensor]) -> DinoArch:
        width, _, patch, _ = state["patch_embed.proj.weight"].shape
        layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        grid = math.isqrt(state["pos_embed"].shape[1] - 1)
        return cls(width, layers, patch, grid, state["blocks.0.mlp.fc1.weight"].shape[0])


class Attention(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = width // HEAD_DIM
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, width = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, width))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = Attention(width)
        self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(width, hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, width: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch, stride=patch)


class DinoViT(nn.Module):
    """DINO's ViT with its key names: ImageNet-normalized images -> patch features."""

    def __init__(self, arch: DinoArch) -> None:
        super().__init__()
        self.arch = arch
        self.patch_embed = PatchEmbed(arch.width, arch.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, arch.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, arch.grid**2 + 1, arch.width))
        self.blocks = nn.ModuleList(Block(arch.width, arch.mlp) for _ in range(arch.layers))
        self.norm = nn.LayerNorm(arch.width, eps=LAYER_NORM_EPS)

    def forward(self, images: Tensor) -> Tensor:
        """DINO's ``get_intermediate_layers(images)[0]`` (the last block's tokens after ``norm``)
        without the class token, on its grid: (B, C, H / patch, W / patch) for `images` (B, 3, H, W)."""
        x = self.patch_embed.proj(images)
        b, _, rows, cols = x.shape
        x = torch.cat([self.cls_token.expand(b, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        x = x + resize_positions(self.pos_embed[0], rows, cols)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1:].transpose(1, 2).reshape(b, -1, rows, cols)


def read_state_dict(model: str, key: str) -> dict[str, Tensor]:
    """DINO's tensors from its checkpoint file or a transformers folder, under DINO's key names."""
    path = Path(model).expanduser()
    if path.is_dir():
        from safetensors.torch import load_file

        weights = path / "model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"{key}: no model.safetensors in '{path}' (give DINO's checkpoint file, "
                              f"dino_vitbase8_pretrain.pth, or facebook/dino-vitb8 saved with save_pretrained)")
        state = {_dino_key(k): v for k, v in load_file(weights).items()}
        for prefix in {k.rsplit(".attn.", 1)[0] for k in state if ".attn.query." in k}:
            for kind in ("weight", "bias"):
                state[f"{prefix}.attn.qkv.{kind}"] = torch.cat([state.pop(f"{prefix}.attn.{p}.{kind}")
                                                                for p in ("query", "key", "value")])
        return state
    if not path.is_file():
        raise ConfigError(f"{key}: no file or folder '{model}' (give DINO's checkpoint, dino_vitbase8_pretrain.pth "
                          f"from github.com/facebookresearch/dino, or facebook/dino-vitb8 saved with save_pretrained)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"{key}: '{path}' is not a torch checkpoint ({type(e).__name__}: {one_line(str(e))[:200]})"
                          ) from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{key}: '{path}' holds a {type(loaded).__name__}, not a DINO state dict")
    loaded = loaded.get("teacher", loaded)  # a DINO training checkpoint holds the student and the teacher
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in loaded.items()}


def _dino_key(name: str) -> str:
    for pattern, replacement in HF_KEYS:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    return name


def random_state_dict(arch: DinoArch, seed: int) -> dict[str, Tensor]:
    """Seeded random weights: N(0, fan_in^-0.5) matrices, N(0, 0.5) position and class
    embeddings, LayerNorms near identity, small biases."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in DinoViT(arch).state_dict().items():
        noise = torch.randn(tensor.shape, generator=generator)
        if "norm" in name:
            state[name] = (1.0 if name.endswith("weight") else 0.0) + 0.1 * noise
        elif name in ("pos_embed", "cls_token"):
            state[name] = 0.5 * noise
        elif tensor.dim() > 1:
            state[name] = noise * tensor[0].numel() ** -0.5
        else:
            state[name] = 0.1 * noise
    return state


def load_dino(model: str, tiny: dict, key: str = "pixel.clip.proxy_model") -> DinoViT:
    """A DINO ViT in eval mode: `model` DINO's checkpoint file, a transformers folder, or ``"tiny"``
    (`tiny`: ``width``, ``layers``, ``patch``, ``grid``, ``seed``; MLP 4 x width)."""
    if model == "tiny":
        arch = DinoArch(tiny["width"], tiny["layers"], tiny["patch"], tiny["grid"], 4 * tiny["width"])
        state = random_state_dict(arch, int(tiny["seed"]))
    else:
        state = read_state_dict(model, key)
        try:
            arch = DinoArch.of(state)
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"{key}: '{model}' holds no DINO ViT weights (missing {e})") from None
    net = DinoViT(arch)
    try:
        missing, _ = net.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, AttributeError) as e:  # wrong shapes, or values that are no tensors
        raise ConfigError(f"{key}: '{model}' is not a DINO ViT state dict ({type(e).__name__}: "
                          f"{one_line(str(e))[:300]})") from None
    if missing:
        raise ConfigError(f"{key}: '{model}' lacks DINO weights: {', '.join(missing[:5])}")
    return net.eval().requires_grad_(False)

