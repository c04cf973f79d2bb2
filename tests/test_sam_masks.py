"""Our SAM automatic-mask generator against segment-anything's own `SamAutomaticMaskGenerator`,
on the tiny random SAM (FACTS.md), with thresholds lowered so that masks survive."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils import amg

from rim_bench.stages.backbones.sam import load_sam
from rim_bench.stages.proposals.sam_masks import (
    SamMaskGenerator,
    crop_boxes,
    mask_boxes,
    pack_bits,
    point_grid,
    unpack_bits,
)


@pytest.fixture(scope="module")
def sam():
    return load_sam("tiny", None, 0, "cpu", key="proposer.sam")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """``(H, W, 3)`` with real structure (a photograph), not square, so SAM pads it."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[::3, ::2])


def _same(theirs: list[dict], ours, image: np.ndarray) -> None:
    assert len(ours.masks) == len(theirs) > 0
    assert ours.masks.shape[1:] == image.shape[:2] and ours.masks.dtype == torch.bool
    for record, mask, box, iou, stability, point, crop in zip(theirs, ours.masks, ours.boxes, ours.iou_preds,
                                                              ours.stability, ours.points, ours.crop_boxes):
        expected = torch.from_numpy(record["segmentation"])
        inter, union = (expected & mask).sum().item(), (expected | mask).sum().item()
        assert union == 0 or inter / union >= 0.99
        x0, y0, x1, y1 = box.tolist()
        assert np.allclose(record["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=1)
        assert iou.item() == pytest.approx(record["predicted_iou"], abs=1e-5)
        assert stability.item() == pytest.approx(record["stability_score"], abs=1e-3)
        assert np.allclose(record["point_coords"][0], point.tolist())
        x0, y0, x1, y1 = crop.tolist()
        assert record["crop_box"] == [x0, y0, x1 - x0, y1 - y0]


@pytest.mark.parametrize("settings", [
    # every mask of every point (no NMS): the decoder, the upscaling and the scores, mask by mask
    dict(points_per_side=8, points_per_batch=24, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0),
    # the IoU filter and NMS
    dict(points_per_side=6, points_per_batch=64, pred_iou_thresh=0.1, stability_score_thresh=0.0, box_nms_thresh=0.7),
    # crops: the crop-edge filter and the NMS across crops
    dict(points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0,
         crop_n_layers=1, crop_nms_thresh=1.0),
])
def test_masks_equal_segment_anythings(sam, image, settings):
    theirs = SamAutomaticMaskGenerator(sam, output_mode="binary_mask", **settings).generate(image)
    _same(theirs, SamMaskGenerator(sam, **settings)(image), image)


def test_stability_filter_equal_segment_anythings(sam, image):
    """The tiny SAM's logits are small: a small offset gives stability scores spread over (0, 1)."""
    settings = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.6, stability_score_offset=0.01,
                    box_nms_thresh=1.0)
    theirs = SamAutomaticMaskGenerator(sam, output_mode="binary_mask", **settings).generate(image)
    ours = SamMaskGenerator(sam, **settings)(image)
    unfiltered = SamMaskGenerator(sam, **{**settings, "stability_score_thresh": 0.0})(image)
    assert 0 < len(ours.masks) < len(unfiltered.masks)  # the filter decided something
    _same(theirs, ours, image)


def test_no_mask_survives(sam, image):
    ours = SamMaskGenerator(sam, points_per_side=4, pred_iou_thresh=1e9)(image)
    assert ours.masks.shape == (0, *image.shape[:2]) and ours.boxes.shape == (0, 4) and len(ours.iou_preds) == 0


def test_the_helpers_equal_segment_anythings():
    assert np.array_equal(point_grid(5), amg.build_point_grid(5))
    for size, layers in [((375, 500), 1), ((500, 333), 2), ((64, 64), 1)]:
        boxes, layer_ids = amg.generate_crop_boxes(size, layers, 512 / 1500)
        assert crop_boxes(*size, layers, 512 / 1500) == list(zip(boxes, layer_ids))
    masks = torch.from_numpy(np.random.default_rng(0).random((6, 13, 21)) > 0.97)
    masks[0] = False  # empty: a 0 box
    assert torch.equal(mask_boxes(masks), amg.batched_mask_to_box(masks))
    assert torch.equal(unpack_bits(pack_bits(masks), 21), masks)


def test_proposer_without_regions_gives_an_empty_stack():
    from rim_bench.stages.proposals.sam_automatic import SamProposer

    proposer = SamProposer("tiny", None, {"seed": 0}, points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0,
                           stability_score_thresh=0.0, box_nms_thresh=0.7, crop_n_layers=0, min_area=10**9)
    masks = proposer(torch.randint(0, 256, (3, 40, 52), dtype=torch.uint8))
    assert masks.shape == (0, 40, 52) and masks.dtype == torch.bool
