"""SAM 2's automatic masks as region proposals."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from rim_bench.core.params import FileWeights, Range, ref
from rim_bench.core.registry import PROPOSERS

TINY = {"seed": ref("${seed}")}  # the "tiny" model's init (random weights, tests)
ModelType = Literal["sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "sam2_hiera_t",
                    "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l", "tiny"]


@PROPOSERS.register("sam2")
class Sam2Proposer(nn.Module):
    """Region proposals from SAM 2's automatic mask generator (the sam2 package's).

    Like ``proposer.name=sam``: masks may overlap and leave pixels uncovered, the segmenter
    resolves both. SAM 2 runs on the CPU here and moves with the pipeline to each process's device.

    Args:
        model_type: the sam2 package's config name, ``sam2.1_hiera_{t,s,b+,l}`` (SAM 2.1) or
            ``sam2_hiera_{t,s,b+,l}`` (SAM 2), or ``tiny`` (random init, tests).
        checkpoint: that model's ``.pt`` file (``sam2.1_hiera_large.pt``, ...; docs/weights.md).
        tiny: ``seed``, which initialises the ``tiny`` model.
        points_per_side ... crop_n_layers: `SAM2AutomaticMaskGenerator`'s settings (same names and defaults).
        min_area: masks smaller than that many pixels are dropped.
    """

    def __init__(self, model_type: ModelType = "sam2.1_hiera_l", checkpoint: str | None = None, tiny: dict = TINY,
                 points_per_side: Annotated[int, Range(1)] = 32, points_per_batch: Annotated[int, Range(1)] = 64,
                 pred_iou_thresh: Annotated[float, Range(0, 1)] = 0.8,
                 stability_score_thresh: Annotated[float, Range(0, 1)] = 0.95,
                 box_nms_thresh: Annotated[float, Range(0, 1)] = 0.7, crop_n_layers: Annotated[int, Range(0)] = 0,
                 min_area: Annotated[int, Range(0)] = 100) -> None:
        from rim_bench.stages.backbones.sam2 import Sam2AutomaticSegmenter, load_sam2

        super().__init__()
        self.sam2 = load_sam2(model_type, checkpoint, int(tiny["seed"]), key="proposer.sam2").eval()
        self.segmenter = Sam2AutomaticSegmenter(
            self.sam2, points_per_side=points_per_side, points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh, crop_n_layers=crop_n_layers,
        )
        self.min_area = min_area

    @classmethod
    def weights(cls, params: dict, key: str) -> list[FileWeights]:
        """The SAM 2 checkpoint to check before a run (none for the random ``tiny`` model)."""
        if params["model_type"] == "tiny":
            return []
        return [FileWeights(f"{key}.checkpoint", params["checkpoint"] or "",
                            f"the SAM 2 checkpoint of {params['model_type']}, see docs/weights.md")]

    def forward(self, image: Tensor) -> Tensor:
        """``(3, H, W) uint8`` → ``(N, H, W) bool`` on the CPU (N may be 0)."""
        masks = torch.from_numpy(self.segmenter(image.permute(1, 2, 0).cpu().numpy()))
        return masks[masks.flatten(1).sum(1) >= self.min_area]
