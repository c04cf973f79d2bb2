"""The training-free LightningModule: `test_step` only."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from PIL import Image

from rim_bench.data.base import BadSample
from rim_bench.data.palette import voc_palette
from rim_bench.errors import DataError
from rim_bench.io import file_in
from rim_bench.metrics import SegmentationMetrics
from rim_bench.pipeline import SegmentationPipeline
from rim_bench.types import Sample
from rim_bench.visualize import save_overlay


class RIMTestModule(L.LightningModule):
    """Runs the pipeline on each test image and accumulates data-set-level metrics.

    Args:
        pipeline: the per-image pipeline, its bank set.
        class_names: the C class names (label id order).
        prediction_dir: if set, one palette PNG per image is written there.
        overlay_dir: if set, side-by-side pictures (image, regions, prediction, ground truth)
            of the data set's first `max_overlays` images are written there, whichever
            processes score them.

    Output files are named by `file_in` (an image id never leaves its folder). Samples the
    data set could not read (`BadSample`, with ``data.skip_bad``) are not scored; `results`
    lists them under ``skipped`` (from every process).
    """

    def __init__(self, pipeline: SegmentationPipeline, class_names: list[str], prediction_dir: Path | None = None,
                 overlay_dir: Path | None = None, max_overlays: int = 0):
        super().__init__()
        self.pipeline = pipeline
        self.class_names = class_names
        self.prediction_dir = prediction_dir
        self.overlay_dir = overlay_dir
        self.max_overlays = max_overlays
        self.images_seen = 0  # by this process; with `ShardSampler` its k-th is the data set's rank + k * W
        self.metrics = SegmentationMetrics(len(class_names))
        self.skipped: dict[str, str] = {}  # image id → why it could not be read
        self.results: dict | None = None
        self._step_end = 0.0  # when the last step ended: the wait until the next is the data's time

    def on_test_epoch_start(self) -> None:
        self._step_end = time.perf_counter()

    def test_step(self, batch: list[Sample | BadSample], batch_idx: int) -> None:
        self.pipeline.timer.add("data", time.perf_counter() - self._step_end)  # loading and Lightning's loop
        for sample in batch:
            if isinstance(sample, BadSample):
                self.skipped[sample.image_id] = sample.problem
                self.images_seen += 1
                continue
            pred = self.pipeline(sample.image, sample.image_id)
            with self.pipeline.timer("scoring"):
                try:
                    self.metrics.update(pred.label_map, sample.label.to(pred.label_map.device))
                except ValueError as e:
                    raise DataError(f"image '{sample.image_id}': {e}") from None
            if self.prediction_dir is not None:
                with self.pipeline.timer("writing"):
                    save_label_png(pred.label_map, file_in(self.prediction_dir, sample.image_id, ".png"))
            index = self.global_rank + self.images_seen * self.trainer.world_size
            self.images_seen += 1
            if self.overlay_dir is not None and index < self.max_overlays:
                with self.pipeline.timer("writing"):
                    save_overlay(
                        file_in(self.overlay_dir, sample.image_id, ".png"), image=sample.image.permute(1, 2, 0).numpy(),
                        region_map=pred.region_map.cpu().numpy(), prediction=pred.label_map.cpu().numpy(),
                        label=sample.label.numpy(), class_names=self.class_names, image_id=sample.image_id,
                    )
        self._step_end = time.perf_counter()

    def on_test_epoch_end(self) -> None:
        scores = self.metrics.compute()
        self.results = {k: v.cpu() for k, v in scores.items()}
        self.results["skipped"] = self._all_skipped()
        self.log_dict(
            {f"test/{k}": 100 * scores[k].float() for k in ("mIoU", "mAcc", "aAcc")}, sync_dist=False
        )
        per_class = {f"test/iou/{name}": 100 * float(v) for name, v in zip(self.class_names, scores["iou"])}
        for logger in self.loggers:
            logger.log_metrics({k: v for k, v in per_class.items() if v == v})  # skip NaN (class absent)

    def _all_skipped(self) -> dict[str, str]:
        """The skipped samples of every process."""
        if self.trainer.world_size == 1:
            return dict(self.skipped)
        gathered: list = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, self.skipped)
        return {k: v for part in gathered for k, v in part.items()}


def save_label_png(label_map: torch.Tensor, path: Path) -> None:
    """Write an ``(H, W)`` label map as a VOC palette PNG (pixel value = class id, 255 = none)."""
    from rim_bench.io import atomic_path

    img = Image.fromarray(label_map.to(torch.uint8).cpu().numpy())  # mode "L"
    img.putpalette(voc_palette())  # turns it into mode "P", indices unchanged
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
