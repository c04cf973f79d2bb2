"""SCLIP's last block (Wang, Mei and Yuille, "SCLIP", ECCV 2024; its ``clip/model.py``
``custom_attn(csa=True)``): correlative self-attention softmax(q qᵀ·s) + softmax(k kᵀ·s),
s = 1/sqrt(head dim), with the residual and the MLP kept."""

from __future__ import annotations

from torch import Tensor

from rim_bench.stages.backbones.openai_clip import Block


def last_block(block: Block, x: Tensor, grid: tuple[int, int]) -> Tensor:
    """Output tokens (B, N, D) of the last block for its input `x` (B, N, D)."""
    q, k, v = block.attn.qkv(block.ln_1(x))
    s = q.shape[-1] ** -0.5
    attn = (q @ q.transpose(-1, -2) * s).softmax(-1) + (k @ k.transpose(-1, -2) * s).softmax(-1)
    x = x + block.attn.merge(attn @ v)
    return x + block.mlp(block.ln_2(x))
