"""Segment Anything: the only module that imports segment_anything.

`load_sam` builds ``vit_h`` / ``vit_l`` / ``vit_b`` from a checkpoint file through
segment-anything's own `sam_model_registry`, or ``"tiny"``: a random-init SAM with a
2-layer image encoder at 256 px that runs in well under a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from rim_bench.errors import ConfigError

MODEL_TYPES = ("vit_h", "vit_l", "vit_b")


def load_sam(model_type: str, checkpoint: str | None, seed: int, device: torch.device | str, key: str) -> Sam:
    """SAM in eval mode on `device`.

    Args:
        model_type: ``vit_h``, ``vit_l``, ``vit_b`` or ``tiny``.
        checkpoint: the ``.pth`` file for the real models (e.g. ``sam_vit_h_4b8939.pth``).
        seed: initialises the ``tiny`` model.
        key: the config block that holds these values, for error messages (``proposer.sam``).
    """
    if model_type == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sam = _tiny_sam()
    elif model_type in MODEL_TYPES:
        if checkpoint is None or not Path(checkpoint).expanduser().is_file():
            raise ConfigError(
                f"{key}.checkpoint: SAM checkpoint '{checkpoint}' not found: download sam_{model_type}_*.pth "
                f"(links in the segment-anything README) and set {key}.checkpoint=PATH"
            )
        sam = sam_model_registry[model_type](checkpoint=str(Path(checkpoint).expanduser()))
    else:
        raise ConfigError(f"{key}.model_type: unknown '{model_type}' (choose {', '.join(MODEL_TYPES)} or tiny)")
    return sam.to(device).eval()


def _tiny_sam() -> Sam:
    dim, size, patch = 32, 256, 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=patch, embed_dim=64, depth=2, num_heads=2, out_chans=dim,
            window_size=4, global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(size // patch, size // patch), input_image_size=(size, size),
            mask_in_chans=8,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=dim,
        ),
    )


class PromptedSegmenter:
    """One mask per box/points prompt: the best of SAM's three by predicted IoU."""

    def __init__(self, sam: Sam) -> None:
        self.predictor = SamPredictor(sam)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, box: np.ndarray | None, points: np.ndarray | None) -> tuple[np.ndarray, float]:
        """Segment the prompted object.

        Args:
            image: ``(H, W, 3) uint8`` RGB.
            box: ``(4,)`` x0, y0, x1, y1 in pixels, or None.
            points: ``(P, 2)`` x, y positive points in pixels, or None.
        Returns:
            ``(H, W) bool`` mask and its predicted IoU.
        """
        self.predictor.set_image(image)
        masks, scores, _ = self.predictor.predict(
            point_coords=points, point_labels=None if points is None else np.ones(len(points), dtype=np.int64),
            box=box, multimask_output=True,
        )
        best = int(np.argmax(scores))
        return masks[best].astype(bool), float(scores[best])


class AutomaticSegmenter:
    """SAM's automatic mask generator: a grid of point prompts, filtered and de-duplicated.

    Args: see segment-anything's `SamAutomaticMaskGenerator` (same names); `min_area` drops
    masks smaller than that many pixels (done here: segment-anything's own small-region
    post-processing needs OpenCV).
    """

    def __init__(self, sam: Sam, points_per_side: int, points_per_batch: int, pred_iou_thresh: float,
                 stability_score_thresh: float, box_nms_thresh: float, crop_n_layers: int, min_area: int) -> None:
        self.generator = SamAutomaticMaskGenerator(
            sam, points_per_side=points_per_side, points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh, crop_n_layers=crop_n_layers, output_mode="binary_mask",
        )
        self.min_area = min_area

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` → ``(N, H, W) bool`` masks (N may be 0)."""
        records = [r for r in self.generator.generate(image) if r["area"] >= self.min_area]
        if not records:
            return np.zeros((0, *image.shape[:2]), dtype=bool)
        return np.stack([r["segmentation"] for r in records]).astype(bool)
