"""SAM's automatic masks as region proposals (RIM's regions)."""

from __future__ import annotations

from typing import Annotated, Literal

from torch import Tensor, nn

from rim_bench.core.params import Range, SamWeights, ref
from rim_bench.core.registry import PROPOSERS

TINY = {"seed": ref("${seed}")}  # the "tiny" model's init (random weights, tests)


@PROPOSERS.register("sam")
class SamProposer(nn.Module):
    """Region proposals: segment-anything's automatic masks, by our own faster generator
    (`rim_bench.stages.proposals.sam_masks.SamMaskGenerator`, the same masks).

    Masks may overlap and may leave pixels uncovered: the segmenter resolves both
    (`rim_bench.stages.segmenter`). The point grid is regular, so proposals are deterministic.
    SAM loads on the CPU and, as a submodule of the pipeline, moves with it to each
    process's device.

    Args:
        model_type: ``vit_h``, ``vit_l``, ``vit_b`` or ``tiny`` (random init, tests).
        checkpoint: the SAM ``.pth`` file for real models.
        tiny: ``seed``, which initialises the ``tiny`` model.
        points_per_side ... crop_n_layers: segment-anything's `SamAutomaticMaskGenerator` settings (same names).
        min_area: masks smaller than that many pixels are dropped (segment-anything's own small-region
            post-processing, which also fills holes, needs OpenCV and is not run).
    """

    def __init__(self, model_type: Literal["vit_h", "vit_l", "vit_b", "tiny"] = "vit_h", checkpoint: str | None = None,
                 tiny: dict = TINY, points_per_side: Annotated[int, Range(1)] = 32,
                 points_per_batch: Annotated[int, Range(1)] = 64, pred_iou_thresh: Annotated[float, Range(0, 1)] = 0.88,
                 stability_score_thresh: Annotated[float, Range(0, 1)] = 0.95,
                 box_nms_thresh: Annotated[float, Range(0, 1)] = 0.7, crop_n_layers: Annotated[int, Range(0)] = 0,
                 min_area: Annotated[int, Range(0)] = 100) -> None:
        from rim_bench.stages.backbones.sam import load_sam
        from rim_bench.stages.proposals.sam_masks import SamMaskGenerator

        super().__init__()
        self.sam = load_sam(model_type, checkpoint, int(tiny["seed"]), "cpu", key="proposer.sam")
        self.generator = SamMaskGenerator(
            self.sam, points_per_side=points_per_side, points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh, crop_n_layers=crop_n_layers,
        )
        self.min_area = min_area

    @classmethod
    def weights(cls, params: dict, key: str) -> list[SamWeights]:
        """The SAM checkpoint to check before a run (none for the random ``tiny`` model)."""
        return [] if params["model_type"] == "tiny" else [SamWeights(key, params["model_type"], params["checkpoint"])]

    def forward(self, image: Tensor) -> Tensor:
        """``(3, H, W) uint8`` → ``(N, H, W) bool`` on the CPU (N may be 0)."""
        from rim_bench.stages.backbones.sam import pad_for_resize

        height, width = image.shape[1:]
        pixels = image.permute(1, 2, 0).cpu().numpy()
        padded = pad_for_resize(pixels, self.sam.image_encoder.img_size)
        masks = self.generator(padded).masks[:, :height, :width]
        keep = masks.flatten(1).sum(1) >= self.min_area
        if padded is not pixels:
            keep &= masks.flatten(1).any(1)  # not a mask of the padding alone
        return masks[keep].cpu()
