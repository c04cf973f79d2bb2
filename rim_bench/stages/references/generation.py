"""Steps 1 and 2 of a generated reference: a Stable Diffusion image and its class word's
cross-attention map, each from a seed of its own, stored once.

The images and maps of one (class, subcategory) are stored under
``<cache_dir>/generated/<key>/`` (`rim_bench.core.cache_layout` names it) with a key of
what makes them alone (`GENERATION_KEY`, and the device type, since CUDA generates in fp16):
a bank for another τ, mask source or featurizer thresholds and segments the same images
again instead of generating them (about 1.3 MB per 512 px image with its map).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rim_bench.core.errors import DataError
from rim_bench.stages.references.attention import AttentionStore, capture_cross_attention, word_token_indices
from rim_bench.stages.references.bank import save_shard, shard_or_none

# Parameters that make the generated images and attention maps (before τ, SAM and DINOv2);
# not the number of images per subcategory: more images are appended to the stored ones.
GENERATION_KEY = ("model", "tiny", "prompt", "image_size", "steps", "guidance", "resolutions", "seed")



def reference_seed(seed: int, class_name: str, subcategory: str, index: int) -> int:
    """A seed for one reference image that does not depend on build order or sharding."""
    digest = hashlib.sha256(f"{seed}|{class_name}|{subcategory}|{index}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


@torch.no_grad()
def generate_with_attention(pipe, prompt: str, word: str, seeds: list[int], size: int, steps: int,
                            guidance: float, resolutions: tuple[int, ...],
                            record: dict | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Generate one image per seed and the class word's attention map of each.

    Args:
        record: if given, filled with what was captured, for checks: the class word's
            ``token_indices`` in the tokenized prompt and ``attention_calls``, the number of
            cross-attention calls captured per map side (layers at that side x steps).
    Returns:
        ``(B, size, size, 3) uint8`` images and ``(B, size, size)`` float maps in [0, 1] (CPU).
    """
    device = pipe.device
    indices = word_token_indices(pipe.tokenizer, prompt, word)
    store = AttentionStore([indices] * len(seeds), resolutions, guided=guidance > 1.0)
    generators = [torch.Generator(device).manual_seed(s) for s in seeds]
    with capture_cross_attention(pipe.unet, store):
        out = pipe([prompt] * len(seeds), height=size, width=size, num_inference_steps=steps,
                   guidance_scale=guidance, generator=generators, output_type="np")
    images = (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)
    if record is not None:
        record.update(token_indices=indices, attention_calls={str(side): n for side, n in sorted(store.counts.items())})
    return images, store.maps((size, size)).cpu()


def stored_generations(path: Path, prompt: str, word: str, seeds: list[int], image_size: int,
                       generate: Callable[[int], tuple[np.ndarray, torch.Tensor]],
                       record: dict | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """The images and attention maps for `seeds`, read from the shard at `path`, the missing
    ones made by ``generate(seed)`` (one at a time: batching changes a few pixels) and stored.

    Seeds do not depend on how many images are asked for, so asking for more generates only
    the new ones and a bank never depends on what was generated before. `record` (filled by
    `generate`) is stored with them.

    Returns:
        ``(len(seeds), size, size, 3) uint8`` images and ``(len(seeds), size, size)`` float maps.
    """
    images = np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    maps = torch.zeros(0, image_size, image_size, dtype=torch.float16)
    stored: list[int] = []
    shard = shard_or_none(path)  # a damaged one is set aside and made again
    if shard is not None:
        tensors, info = shard
        stored = info.get("seeds") or []
        if stored[:len(seeds)] == seeds[:len(stored)]:  # the same first images, fewer or more
            images, maps = tensors["images"].numpy(), tensors["maps"]
        else:
            stored = []
    if len(stored) < len(seeds):
        new = [generate(seed) for seed in seeds[len(stored):]]
        images = np.concatenate([images, *(image for image, _ in new)])
        maps = torch.cat([maps, *(m.half() for _, m in new)])
        stored = seeds
        save_shard(path, {"images": torch.from_numpy(images), "maps": maps},
                   {"prompt": prompt, "word": word, "seeds": stored, **(record or {})})
    return images[:len(seeds)], maps[:len(seeds)].float()  # fp16 maps, as stored


def check_prompt_length(tokenizer, prompt: str, class_name: str) -> None:
    """A prompt past the text encoder's length would lose the class word: a one-line error."""
    limit = tokenizer.model_max_length
    if len(tokenizer(prompt).input_ids) > limit:
        short = lambda text: text if len(text) <= 60 else text[:57] + "..."  # noqa: E731
        raise DataError(f"class '{short(class_name)}': the prompt '{short(prompt)}' is longer than the text "
                        f"encoder's {limit} tokens; use a shorter class name or subcategory phrase")
