"""SAM's automatic masks as region proposals (RIM's regions)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rim_bench.core.errors import ParamError
from rim_bench.core.registry import PROPOSERS


@PROPOSERS.register("sam")
class SamProposer(nn.Module):
    """Region proposals from segment-anything's automatic mask generator.

    Masks may overlap and may leave pixels uncovered: the segmenter resolves both
    (`rim_bench.stages.segmenter`). The point grid is regular, so proposals are deterministic.
    SAM loads on the CPU and, as a submodule of the pipeline, moves with it to each
    process's device.

    Args:
        model_type: ``vit_h``, ``vit_l``, ``vit_b`` or ``tiny`` (random init, tests).
        checkpoint: the SAM ``.pth`` file for real models.
        tiny: ``seed``, which initialises the ``tiny`` model.
        points_per_side ... min_area: see `rim_bench.stages.backbones.sam.AutomaticSegmenter`.
    """

    def __init__(self, model_type: str, checkpoint: str | None, tiny: dict, points_per_side: int,
                 points_per_batch: int, pred_iou_thresh: float, stability_score_thresh: float,
                 box_nms_thresh: float, crop_n_layers: int, min_area: int) -> None:
        from rim_bench.stages.backbones.sam import AutomaticSegmenter, load_sam

        if points_per_side < 1:
            raise ParamError("points_per_side", f"must be at least 1, got {points_per_side}")
        super().__init__()
        self.sam = load_sam(model_type, checkpoint, int(tiny["seed"]), "cpu", key="proposer.sam")
        self.segmenter = AutomaticSegmenter(
            self.sam, points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh, box_nms_thresh,
            crop_n_layers, min_area,
        )

    def forward(self, image: Tensor) -> Tensor:
        """``(3, H, W) uint8`` → ``(N, H, W) bool``."""
        masks = self.segmenter(image.permute(1, 2, 0).cpu().numpy())
        return torch.from_numpy(masks)
