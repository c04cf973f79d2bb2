"""Dense CLIP features (MaskCLIP) in the joint image-text space, for the CLIP baselines.

Regions pooled from these features can be matched with CLIP text embeddings
(`references.name=clip_text`): cross-modal matching, the foil RIM's intra-modal
matching is set against.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from rim_bench.core.errors import ParamError
from rim_bench.core.params import HubWeights, Range, hub_model_weights, ref
from rim_bench.core.registry import FEATURIZERS
from rim_bench.stages.features.dense import model_input

# The "tiny" model's CLIPVisionConfig and projection size (random init, tests).
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
        "patch_size": 8, "image_size": 64, "projection_dim": 16, "seed": ref("${seed}")}


@FEATURIZERS.register("clip")
class ClipDenseFeaturizer(nn.Module):
    """CLIP patch tokens read the MaskCLIP way (see `rim_bench.stages.backbones.clip.dense_clip_tokens`).

    Args:
        model: hub id, local directory, OpenAI ``.pt`` file (``ViT-B-16.pt``) or ``"tiny"``.
        input_size: the short side, in pixels, that images are resized to (the long side
            capped, see `rim_bench.stages.features.dense.model_input_size`; position embeddings are
            interpolated to the new grid).
        attention: the last block's token mixing, ``value`` (MaskCLIP) or ``vv``.
        residual: keep the last block's residual and MLP.
        tiny: the ``"tiny"`` model's vision config, projection size and seed.
    """

    mean: Tensor  # (3, 1, 1) normalization buffers, registered in __init__
    std: Tensor

    def __init__(self, model: str = "openai/clip-vit-base-patch16", input_size: Annotated[int, Range(1)] = 448,
                 attention: Literal["value", "vv"] = "value", residual: bool = True, tiny: dict = TINY) -> None:
        super().__init__()
        from rim_bench.stages.backbones.clip import CLIP_MEAN, CLIP_STD, load_clip

        self.clip = load_clip(model, tiny)
        self.backbone = self.clip.model  # a submodule, so it follows the pipeline to its device
        self.patch_size = self.clip.patch_size
        if input_size < self.patch_size:
            raise ParamError("input_size", f"must be at least the patch size {self.patch_size}, got {input_size}")
        self.input_size = input_size
        self.attention = attention
        self.residual = residual
        self.feature_dim = self.clip.embed_dim
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(3, 1, 1), persistent=False)

    @classmethod
    def weights(cls, params: dict, key: str) -> list[HubWeights]:
        return hub_model_weights(params, key)  # the model folder or hub id to check before a run

    @torch.no_grad()
    def forward(self, image: Tensor) -> Tensor:
        """``(3, H, W) uint8`` → ``(D, h, w) float32``, ``h, w`` the patch grid of the resized image."""
        from rim_bench.stages.backbones.clip import dense_clip_tokens

        x = model_input(image, self.input_size, self.patch_size, self.mean, self.std)
        tokens = dense_clip_tokens(self.clip, x, self.attention, self.residual)
        return tokens.T.reshape(self.feature_dim, x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)

    def encode_text(self, prompts: list[str]) -> Tensor:
        """``P`` prompts → ``(P, D)`` unit-norm text embeddings, comparable with this featurizer's output."""
        from rim_bench.stages.backbones.clip import encode_text

        return encode_text(self.clip, prompts)
