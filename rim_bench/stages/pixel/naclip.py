"""NACLIP's last block (Hajimiri, Ben Ayed and Dolz, WACV 2025; its ``clip/model.py``, arch
``reduced``, attn_strategy ``naclip``): softmax(k kᵀ·s + Ω) with s = 1/sqrt(head dim) and Ω a
Gaussian over the patch grid, Ω[p, p'] = exp(-|p - p'|² / (2σ²)) (0 for the class token);
``out_proj`` of the attended values alone: no residual, no MLP."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from rim_bench.stages.backbones.openai_clip import Block

GAUSSIAN_STD = 5.0  # σ in patches (NACLIP's default gaussian_std)


@lru_cache(maxsize=16)
def neighbourhood(grid: tuple[int, int], std: float = GAUSSIAN_STD) -> Tensor:
    """Ω (1 + rows·cols, 1 + rows·cols): the Gaussian of the grid distance between two patches
    (row-major), with a zero row and column first for the class token."""
    rows, cols = grid
    yx = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    d2 = (yx[:, None, :] - yx[None, :, :]).pow(2).sum(-1).float()
    omega = torch.zeros(rows * cols + 1, rows * cols + 1)
    omega[1:, 1:] = torch.exp(-d2 / (2 * std**2))
    return omega


def last_block(block: Block, x: Tensor, grid: tuple[int, int], gaussian_std: float = GAUSSIAN_STD) -> Tensor:
    """Output tokens (B, N, D) of the last block for its input `x` (B, N, D)."""
    _, k, v = block.attn.qkv(block.ln_1(x))
    omega = neighbourhood(grid, gaussian_std).to(x)
    attn = (k @ k.transpose(-1, -2) * k.shape[-1] ** -0.5 + omega).softmax(-1)
    return block.attn.merge(attn @ v)
