"""CLIP from transformers: with `openai_to_hf`, the only modules that import CLIP's classes.

`load_clip` takes a hub id (``openai/clip-vit-base-patch16``), a local directory saved
with ``save_pretrained`` (model and tokenizer), OpenAI's ``.pt`` file (converted by
`openai_to_hf`), or ``"tiny"``: a random-init `CLIPModel` with a character-level tokenizer
built on the spot, for tests and the smoke benchmark.
`tiny_clip_tokenizer` is shared with the tiny Stable Diffusion text encoder.

`dense_clip_tokens` is MaskCLIP's reading of the vision tower (Zhou, Loy and Dai, "Extract
Free Dense Labels from CLIP", ECCV 2022): in the last block the query-key attention is
replaced by the value path, so every patch token keeps its own content, and the patch
tokens are then projected into the joint image-text space like CLIP's class token.
"""

from __future__ import annotations

import json
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig

from rim_bench.core.errors import ConfigError
from rim_bench.core.io import remove_stale
from rim_bench.stages.backbones.hub import from_hub_or_dir
from rim_bench.stages.backbones.openai_to_hf import bpe_clip_tokenizer, load_openai_as_hf

# OpenAI CLIP's image normalization (its preprocessing's mean and std).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Words the tiny tokenizer keeps whole (one token), to test single- and multi-token words.
TINY_WORDS = ("cat", "dog", "photo")
LAST_BLOCK_ATTENTION = ("value", "vv")


@dataclass
class Clip:
    """A CLIP model in eval mode and its tokenizer."""

    model: CLIPModel
    tokenizer: CLIPTokenizer

    @property
    def patch_size(self) -> int:
        vision = self.model.config.vision_config
        assert isinstance(vision, CLIPVisionConfig)  # CLIPConfig builds it from a dict or None
        assert isinstance(vision.patch_size, int)  # CLIP's patches are square
        return vision.patch_size

    @property
    def embed_dim(self) -> int:
        """D of the joint image-text space."""
        dim = self.model.config.projection_dim
        assert dim is not None  # CLIPModel's projections need it (default 512)
        return int(dim)


def load_clip(model: str, tiny: dict) -> Clip:
    """Load CLIP (model and tokenizer) on the CPU in eval mode.

    Args:
        model: hub id, local directory, OpenAI ``.pt`` file (TorchScript or state dict; its
            tokenizer from CLIP's BPE file, see `openai_clip.find_bpe`), or ``"tiny"``.
        tiny: ``seed`` plus `CLIPVisionConfig` fields (``image_size``, ``patch_size``,
            ``hidden_size``, ...) and ``projection_dim`` for the ``"tiny"`` model.
    """
    if model == "tiny":
        params = dict(tiny)
        seed, projection_dim = params.pop("seed"), params.pop("projection_dim")
        tokenizer = tiny_clip_tokenizer()
        text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                    num_hidden_layers=2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = CLIPModel(CLIPConfig(text_config=text, vision_config=params, projection_dim=projection_dim))
        return Clip(net.eval(), tokenizer)
    key, example = "featurizer.clip.model", "openai/clip-vit-base-patch16"
    if model.endswith(".pt") or Path(model).is_file():
        net = load_openai_as_hf(Path(model))
        text_config = net.config.text_config
        assert isinstance(text_config, CLIPTextConfig)  # CLIPConfig builds it from a dict or None
        tokenizer = bpe_clip_tokenizer(context=text_config.max_position_embeddings)
        if len(tokenizer) != text_config.vocab_size:
            raise ConfigError(f"{key}: '{model}' has a vocabulary of {text_config.vocab_size} tokens, CLIP's BPE file "
                              f"{len(tokenizer)}: give a checkpoint with CLIP's own vocabulary")
        return Clip(net, tokenizer)
    net = from_hub_or_dir(CLIPModel.from_pretrained, model, key, "CLIP", example)
    tokenizer = from_hub_or_dir(CLIPTokenizer.from_pretrained, model, key, "CLIP's tokenizer", example)
    return Clip(net.eval(), tokenizer)


@torch.no_grad()
def encode_text(clip: Clip, prompts: list[str]) -> Tensor:
    """``P`` prompts → ``(P, D)`` unit-norm text embeddings in the joint space."""
    device = clip.model.text_projection.weight.device
    tokens = clip.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(device)
    out = clip.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    embeddings = out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5 | 4
    return nn.functional.normalize(embeddings.float(), dim=-1)


@torch.no_grad()
def dense_clip_tokens(clip: Clip, pixels: Tensor, attention: str = "value", residual: bool = True) -> Tensor:
    """MaskCLIP dense features: patch tokens in the joint image-text space.

    Args:
        pixels: ``(1, 3, H, W)`` normalized with `CLIP_MEAN`/`CLIP_STD`, sides multiples of the patch.
        attention: the last block's token mixing: ``value`` (MaskCLIP: none, each token's own
            value) or ``vv`` (value-value self-attention, as in CLIP Surgery and ClearCLIP).
        residual: keep the last block's residual connection and MLP (MaskCLIP does; ClearCLIP
            finds dropping them cleaner).
    Returns:
        ``(H/patch * W/patch, D)`` float32, row-major over the patch grid.
    """
    vision = clip.model.vision_model
    # The whole tower runs for the last block's input: calling the layers one by one would
    # follow their signature, which differs between transformers 4 and 5 (the wasted last
    # block is 1/L of the cost).
    hidden = vision(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states
    x = hidden[-2]  # (1, 1 + h*w, width): the input of the last block
    block = vision.encoder.layers[-1]
    attn = block.self_attn
    v = attn.v_proj(block.layer_norm1(x))
    if attention == "vv":
        heads = v.unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(1, 2)  # (1, heads, T, head_dim)
        mixed = torch.softmax(heads @ heads.transpose(-1, -2) * attn.scale, dim=-1) @ heads
        v = mixed.transpose(1, 2).flatten(2)
    elif attention != "value":
        raise ValueError(f"unknown last-block attention '{attention}' (choose {', '.join(LAST_BLOCK_ATTENTION)})")
    out = attn.out_proj(v)
    if residual:
        out = x + out
        out = out + block.mlp(block.layer_norm2(out))
    tokens = vision.post_layernorm(out[0, 1:])
    return clip.model.visual_projection(tokens).float()


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A `CLIPTokenizer` over single characters plus `TINY_WORDS` kept whole (its files are
    written to a temporary folder, read, and removed)."""
    remove_stale(tempfile.gettempdir(), "rim-bench-tiny-clip-*")  # left by versions that kept them
    with tempfile.TemporaryDirectory(prefix="rim-bench-tiny-clip-") as folder:
        return _tiny_clip_tokenizer(Path(folder))


def _tiny_clip_tokenizer(folder: Path) -> CLIPTokenizer:
    chars = [c for c in string.printable if not c.isspace()]
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [f"{c}</w>" for c in chars]
    merges = []
    for word in TINY_WORDS:  # merge left to right: "c a" → "ca", then "ca t</w>" → "cat</w>"
        merged = word[0]
        for i, c in enumerate(word[1:], start=1):
            piece = c + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{merged} {piece}")
            merged += piece
            tokens.append(merged)
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
