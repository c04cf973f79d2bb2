"""DINOv2 from transformers: the only module that imports it for DINOv2.

`load_dinov2` takes a hub id (``facebook/dinov2-base``, ``facebook/dinov2-with-registers-small``),
a local directory saved with ``save_pretrained``, or ``"tiny"``: a small random-init
model built from `Dinov2Config` with a fixed seed, for tests and the smoke benchmark.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AutoModel, Dinov2Config, Dinov2Model, PreTrainedModel

from rim_bench.stages.backbones.hub import from_hub_or_dir


def load_dinov2(model: str, tiny: dict) -> PreTrainedModel:
    """Load a DINOv2 (or DINOv2-with-registers) model in eval mode.

    Args:
        model: hub id, local directory, or ``"tiny"``.
        tiny: `Dinov2Config` fields and a ``seed`` for the ``"tiny"`` model.
    """
    if model == "tiny":
        params = dict(tiny)
        seed = params.pop("seed")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = Dinov2Model(Dinov2Config(**params))
        return net.eval()
    net = from_hub_or_dir(AutoModel.from_pretrained, model, "featurizer.dinov2.model", "DINOv2", "facebook/dinov2-base")
    return net.eval()


def prefix_tokens(net: nn.Module) -> int:
    """The number of non-patch tokens before the patch tokens (CLS + registers)."""
    return 1 + int(getattr(net.config, "num_register_tokens", 0) or 0)


def patch_features(net: PreTrainedModel, images: Tensor) -> Tensor:
    """The last layer's normed patch tokens on their grid, (B, C, H / patch, W / patch), for
    ImageNet-normalized `images` (B, 3, H, W): DINOv2's ``get_intermediate_layers(images,
    reshape=True)[0]`` (class token and registers left out)."""
    b, _, height, width = images.shape
    tokens = net(pixel_values=images).last_hidden_state[:, prefix_tokens(net):]
    patch = net.config.patch_size
    return tokens.transpose(1, 2).reshape(b, -1, height // patch, width // patch)
