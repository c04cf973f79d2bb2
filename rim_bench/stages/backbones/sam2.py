"""SAM 2: the only module that imports the `sam2` package (an optional extra: ``pip install 'rim-bench[sam2]'``).

`load_sam2` builds SAM 2 or 2.1 with a Hiera image encoder (tiny, small, base+, large) from the package's
own config (its name is the model type: ``sam2.1_hiera_t`` is ``configs/sam2.1/sam2.1_hiera_t.yaml``)
and a local checkpoint (the released ``.pt`` files hold ``{"model": state_dict}``), or ``"tiny"``: a
random-init SAM 2 with a 5-block, 16-wide Hiera and a 32-wide prompt decoder, for tests.
`Sam2AutomaticSegmenter` is the package's own `SAM2AutomaticMaskGenerator`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rim_bench.core.errors import ConfigError

# model type → released checkpoint (sam2/build_sam.py's HF_MODEL_ID_TO_FILENAMES; docs/weights.md)
CHECKPOINTS = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt", "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt", "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
    "sam2_hiera_t": "sam2_hiera_tiny.pt", "sam2_hiera_s": "sam2_hiera_small.pt",
    "sam2_hiera_b+": "sam2_hiera_base_plus.pt", "sam2_hiera_l": "sam2_hiera_large.pt",
}
MODEL_TYPES = (*CHECKPOINTS, "tiny")
# The tiny model: SAM 2.1 tiny's config, smaller. The image stays 1024 px (SAM2ImagePredictor's
# feature sizes are fixed to it); the global-attention block may not be a pooling one.
TINY_OVERRIDES = [
    "++model.image_encoder.trunk.embed_dim=16", "++model.image_encoder.trunk.stages=[1,1,1,2]",
    "++model.image_encoder.trunk.global_att_blocks=[4]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]", "++model.image_encoder.neck.d_model=32",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=32", "++model.memory_attention.num_layers=1",
]


def config_name(model_type: str) -> str:
    """The sam2 package's config for `model_type` (``tiny``: SAM 2.1 tiny's, made smaller)."""
    stem = "sam2.1_hiera_t" if model_type == "tiny" else model_type
    return f"configs/{stem.split('_')[0]}/{stem}.yaml"


def load_sam2(model_type: str, checkpoint: str | None, seed: int, key: str) -> torch.nn.Module:
    """SAM 2 in eval mode on the CPU.

    Args:
        model_type: a key of `CHECKPOINTS` (e.g. ``sam2.1_hiera_l``) or ``tiny`` (random init).
        checkpoint: the ``.pt`` file for the real models.
        seed: initialises the ``tiny`` model.
        key: the config block that holds these values, for error messages (``proposer.sam2``).
    """
    try:
        from sam2.build_sam import build_sam2
    except ImportError as e:
        raise ConfigError(f"{key}: the sam2 package is not installed ({e}): pip install 'rim-bench[sam2]' "
                          "(SAM 2 with its hydra-core and iopath)") from None
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{key}.model_type: unknown '{model_type}' (choose {', '.join(MODEL_TYPES)})")
    if model_type == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_sam2(config_name("tiny"), None, device="cpu", hydra_overrides_extra=TINY_OVERRIDES)
    path = Path(checkpoint).expanduser() if checkpoint else None
    if path is None or not path.is_file():
        raise ConfigError(f"{key}.checkpoint: SAM 2 checkpoint '{checkpoint}' not found: download "
                          f"{CHECKPOINTS[model_type]} (see docs/weights.md) and set {key}.checkpoint=PATH")
    model = build_sam2(config_name(model_type), None, device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        model.load_state_dict(state)
    except Exception as e:  # a foreign file, or another model type's weights
        raise ConfigError(f"{key}.checkpoint: {path} is not a {model_type} checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]}); give {CHECKPOINTS[model_type]} or set "
                          f"{key}.model_type to the checkpoint's") from None
    return model


class Sam2AutomaticSegmenter:
    """SAM 2's automatic mask generator (the sam2 package's `SAM2AutomaticMaskGenerator`).

    Args: its settings, same names (see `rim_bench.stages.proposals.sam2_automatic.Sam2Proposer`).
    """

    def __init__(self, model: torch.nn.Module, **settings: Any) -> None:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        self.generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **settings)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB → ``(N, H, W) bool`` masks (N may be 0)."""
        records = self.generator.generate(image)
        if not records:
            return np.zeros((0, *image.shape[:2]), dtype=bool)
        return np.stack([r["segmentation"] for r in records]).astype(bool)
