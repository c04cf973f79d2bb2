"""SAM's automatic masks as region proposals (RIM's regions)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from rim_bench.core.params import Range, SamWeights, ref
from rim_bench.core.registry import PROPOSERS

TINY = {"seed": ref("${seed}")}  # the "tiny" model's init (random weights, tests)


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

    def __init__(self, model_type: Literal["vit_h", "vit_l", "vit_b", "tiny"] = "vit_h", checkpoint: str | None = None,
                 tiny: dict = TINY, points_per_side: Annotated[int, Range(1)] = 32,
                 points_per_batch: Annotated[int, Range(1)] = 64, pred_iou_thresh: Annotated[float, Range(0, 1)] = 0.88,
                 stability_score_thresh: Annotated[float, Range(0, 1)] = 0.95,
                 box_nms_thresh: Annotated[float, Range(0, 1)] = 0.7, crop_n_layers: Annotated[int, Range(0)] = 0,
                 min_area: Annotated[int, Range(0)] = 100) -> None:
        from rim_bench.stages.backbones.sam import AutomaticSegmenter, load_sam

        super().__init__()
        self.sam = load_sam(model_type, checkpoint, int(tiny["seed"]), "cpu", key="proposer.sam")
        self.segmenter = AutomaticSegmenter(
            self.sam, points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh, box_nms_thresh,
            crop_n_layers, min_area,
        )

    @classmethod
    def weights(cls, params: dict, key: str) -> list[SamWeights]:
        """The SAM checkpoint to check before a run (none for the random ``tiny`` model)."""
        return [] if params["model_type"] == "tiny" else [SamWeights(key, params["model_type"], params["checkpoint"])]

    def forward(self, image: Tensor) -> Tensor:
        """``(3, H, W) uint8`` → ``(N, H, W) bool``."""
        masks = self.segmenter(image.permute(1, 2, 0).cpu().numpy())
        return torch.from_numpy(masks)
