"""ClearCLIP's last block (Lan et al., ECCV 2024; its ``open_clip/transformer.py``
``custom_attn(model_type='ClearCLIP')`` with ``ignore_residual=True``): ``out_proj(softmax(q qᵀ·s) v)``
alone, s = 1/sqrt(head dim): no residual, no MLP."""

from __future__ import annotations

from torch import Tensor

from rim_bench.stages.backbones.openai_clip import Block


def last_block(block: Block, x: Tensor, grid: tuple[int, int]) -> Tensor:
    """Output tokens (B, N, D) of the last block for its input `x` (B, N, D)."""
    q, _, v = block.attn.qkv(block.ln_1(x))
    attn = (q @ q.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
    return block.attn.merge(attn @ v)
