"""MaskCLIP's last block (Zhou, Loy and Dai, ECCV 2022): each patch keeps its own value,
``out_proj(v(ln_1 x))``; no attention between tokens, no residual, no MLP (ClearCLIP's
``model_type='MaskCLIP'`` with ``ignore_residual=True``)."""

from __future__ import annotations

from torch import Tensor

from rim_bench.stages.backbones.openai_clip import Block


def last_block(block: Block, x: Tensor, grid: tuple[int, int]) -> Tensor:
    """Output tokens (B, N, D) of the last block for its input `x` (B, N, D)."""
    _, _, v = block.attn.qkv(block.ln_1(x))
    return block.attn.merge(v)
