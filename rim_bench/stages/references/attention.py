"""Class-token cross-attention maps from a Stable Diffusion UNet, and SAM prompts from them.

Capture: `capture_cross_attention` swaps the UNet's cross-attention processors (``attn2``)
for `CapturingProcessor` with ``unet.set_attn_processor`` and restores the originals
afterwards. A capturing processor computes the attention probabilities explicitly only
in the layers at the wanted resolutions (the default SDPA processors do not expose
them) and delegates every other call to the original processor.

Map: the class word's tokens (a word split into several tokens is averaged), averaged
over the chosen layers, heads and timesteps, min-max normalized to [0, 1], and upsampled
to the image. With classifier-free guidance the UNet batch holds the unconditional half
first; only the conditional half is kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rim_bench.core.errors import ConfigError


class AttentionStore:
    """Running sums of the class word's cross-attention per prompt, per resolution.

    Args:
        token_indices: for each prompt of the batch, the positions of its class word's tokens.
        resolutions: the attention-map sides (in latent pixels) to keep, e.g. ``(16,)``.
        guided: whether the UNet batch is doubled by classifier-free guidance.
    """

    def __init__(self, token_indices: list[list[int]], resolutions: tuple[int, ...], guided: bool) -> None:
        self.token_indices = token_indices
        self.resolutions = set(resolutions)
        self.guided = guided
        self.sums: dict[int, Tensor] = {}  # side → (B, side, side)
        self.counts: dict[int, int] = {}
        self.seen: set[int] = set()  # every cross-attention side met, for error messages

    def wants(self, pixels: int) -> bool:
        side = math.isqrt(pixels)
        self.seen.add(side)
        return side * side == pixels and side in self.resolutions

    def add(self, probs: Tensor, heads: int) -> None:
        """Accumulate one layer's ``(B' * heads, pixels, tokens)`` probabilities (B' = 2B when guided)."""
        batch = probs.shape[0] // heads
        probs = probs.reshape(batch, heads, *probs.shape[1:])
        if self.guided:
            probs = probs[batch // 2:]
        side = math.isqrt(probs.shape[2])
        maps = torch.stack([probs[b, :, :, idx].float().mean(dim=(0, 2)) for b, idx in enumerate(self.token_indices)])
        maps = maps.reshape(-1, side, side)
        self.sums[side] = self.sums.get(side, 0) + maps
        self.counts[side] = self.counts.get(side, 0) + 1

    def maps(self, size: tuple[int, int]) -> Tensor:
        """``(B, H, W)`` in [0, 1]: the mean over layers and steps, upsampled to `size`, normalized."""
        if not self.sums:
            raise ConfigError(
                f"no cross-attention layer at resolution {sorted(self.resolutions)}; this UNet has "
                f"{sorted(self.seen)} (set references.diffusion.attention_resolutions)"
            )
        per_side = [(self.sums[s] / self.counts[s])[:, None] for s in sorted(self.sums)]
        mean = torch.stack([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in per_side])
        return normalize01(mean.mean(0)[:, 0])


class CapturingProcessor:
    """Cross-attention that records its probabilities where the store wants them."""

    def __init__(self, store: AttentionStore, original: Any) -> None:
        self.store = store
        self.original = original

    def __call__(self, attn: Any, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, **kwargs: Any) -> Tensor:
        if encoder_hidden_states is None or hidden_states.ndim != 3 or not self.store.wants(hidden_states.shape[1]):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        # The standard attention computation, written out so the probabilities can be kept.
        residual = hidden_states
        batch, tokens = encoder_hidden_states.shape[:2]
        attention_mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B * heads, pixels, tokens)
        self.store.add(probs, attn.heads)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def is_cross_attention(processor_name: str) -> bool:
    """Whether a UNet processor (``down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor``)
    is a cross-attention to the text: diffusers' transformer blocks name self-attention ``attn1``
    and the attention to the prompt ``attn2``."""
    return processor_name.endswith("attn2.processor")


@contextmanager
def capture_cross_attention(unet: Any, store: AttentionStore) -> Iterator[AttentionStore]:
    """Route the UNet's cross-attention through `store` inside the block; restore after."""
    original = dict(unet.attn_processors)
    unet.set_attn_processor({
        name: CapturingProcessor(store, proc) if is_cross_attention(name) else proc
        for name, proc in original.items()
    })
    try:
        yield store
    finally:
        unet.set_attn_processor(original)


def word_token_indices(tokenizer: Any, prompt: str, word: str) -> list[int]:
    """Positions of `word`'s tokens in the tokenized `prompt` (its last occurrence).

    CLIP's tokenizer splits text into words before BPE, so a word's tokens inside a
    prompt are the same as the word's own tokens.
    """
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    target = tokenizer(word, add_special_tokens=False).input_ids
    for start in range(len(ids) - len(target), -1, -1):
        if ids[start:start + len(target)] == target:
            return list(range(start, start + len(target)))
    raise ConfigError(f"references.diffusion.prompt: the word '{word}' is not in the prompt '{prompt}' (or past the "
                      "tokenizer's 77 tokens); shorten the prompt or the subcategory phrase")


def class_word(subcategory: str, names: list[str]) -> str:
    """The words whose attention locates the object: the class name or a synonym found in
    the subcategory phrase (the longest one), else the phrase's last word (its head noun)."""
    for name in sorted(names, key=len, reverse=True):
        if re.search(rf"\b{re.escape(name.lower())}\b", subcategory.lower()):
            return name.lower()
    return subcategory.split()[-1]


def normalize01(maps: Tensor) -> Tensor:
    """Min-max normalize each ``(B, H, W)`` map to [0, 1]; a constant map becomes 0."""
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).reshape(maps.shape)


def binarize(attention: Tensor, threshold: float) -> Tensor:
    """``(H, W)`` map in [0, 1] → ``(H, W) bool``: pixels at or above `threshold` (τ)."""
    return attention >= threshold


def sam_prompt(
    binary: np.ndarray, attention: np.ndarray, mode: str, num_points: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """SAM's prompt from a binarized attention map.

    Args:
        binary: ``(H, W) bool``, not empty.
        attention: ``(H, W)`` the map it came from.
        mode: ``box``, ``points`` or ``box_points``.
        num_points: positive points at the attention maxima (see `attention_peaks`).
    Returns:
        box ``(4,)`` x0, y0, x1, y1 (or None) and points ``(P, 2)`` x, y (or None).
    """
    ys, xs = np.nonzero(binary)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    if mode == "box":
        return box, None
    points = attention_peaks(attention, binary, num_points)
    return (box if mode == "box_points" else None), points


def attention_peaks(attention: np.ndarray, region: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` ``(x, y)`` maxima of `attention` inside `region`, each suppressing a disk
    of 1/8 of the image's short side around it so that the points spread over the object."""
    radius = max(1.0, min(attention.shape) / 8)
    scores = np.where(region, attention, -np.inf).astype(np.float64)
    yy, xx = np.mgrid[: attention.shape[0], : attention.shape[1]]
    chosen = []
    for _ in range(count):
        y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if not np.isfinite(scores[y, x]):
            break
        chosen.append((x, y))
        scores[(yy - y) ** 2 + (xx - x) ** 2 < radius ** 2] = -np.inf
    return np.array(chosen, dtype=np.float32)
