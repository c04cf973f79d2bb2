"""Cost per stage of RIM at real size on this machine, and `rim-bench plan`'s projection of full runs.

    python tests/make_real_size_fixtures.py          # once
    python benchmarks/real_size_cost.py [--sam vit_h] [key=value ...]

Runs `rim-bench plan experiment=rim_voc21` with the real-size random-weight models (SAM,
DINOv2 ViT-B/14 with registers, Stable Diffusion 1.5 at the defaults: 512 px, 25 steps, 10
subcategories x 2 images per class) on a VOC-size image (500x375) and one generated reference,
then projects full VOC21, Context60 and COCO-Object runs from the same per-item costs (their
images are VOC- or COCO-size, which DINOv2's 448 px input and SAM's 1024 px input make cost
alike). The data sets are stand-ins in each benchmark's layout with its number of images
(links to one picture): plan counts them, and measures only the first. SAM's automatic masks
run at thresholds 0, since random weights pass none of the defaults (a real SAM keeps tens
of masks per image); the grid of 32 x 32 points is the default.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from make_real_size_fixtures import fixture_path  # noqa: E402 (after the path insert)

# Val images per benchmark (datasets/README.md): the projection's item counts.
BENCHMARKS = {
    "rim_voc21": ("VOCdevkit/VOC2012", "JPEGImages", "SegmentationClass", "ImageSets/Segmentation", 1449),
    "rim_context60": ("VOCdevkit/VOC2010", "JPEGImages", "SegmentationClassContext",
                      "ImageSets/SegmentationContext", 5105),
    "rim_coco_object": ("coco_stuff164k", "images/val2017", "annotations/val2017", None, 5000),
}


def stand_in(root: Path, experiment: str) -> Path:
    """A folder in the benchmark's layout with its number of images, all links to one 500x375 picture."""
    base, images, labels, split, count = BENCHMARKS[experiment]
    picture, label = root / "picture.jpg", root / "label.png"
    if not picture.exists():
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(picture)
        Image.fromarray(np.zeros((375, 500), dtype=np.uint8)).save(label)
    data = root / experiment
    (data / base / images).mkdir(parents=True)
    (data / base / labels).mkdir(parents=True)
    ids = [f"{i:06d}" for i in range(count)]
    suffix = "_instanceTrainIds" if split is None else ""
    for image_id in ids:
        (data / base / images / f"{image_id}.jpg").symlink_to(picture)
        (data / base / labels / f"{image_id}{suffix}.png").symlink_to(label)
    if split:
        (data / base / split).mkdir(parents=True)
        (data / base / split / "val.txt").write_text("\n".join(ids) + "\n")
    return data


def main() -> None:
    from rim_bench.commands.plan import format_projection, project, run_plan
    from rim_bench.core.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam", default="vit_h", choices=("vit_h", "vit_b"))
    parser.add_argument("overrides", nargs="*", help="more key=value overrides")
    args = parser.parse_args()
    models = [
        f"proposer.sam.model_type={args.sam}", f"proposer.sam.checkpoint={fixture_path(f'sam_{args.sam}')}",
        f"featurizer.dinov2.model={fixture_path('dinov2_base')}", f"references.diffusion.model={fixture_path('sd15')}",
        "proposer.sam.pred_iou_thresh=0", "proposer.sam.stability_score_thresh=0", "trainer.accelerator=cpu",
    ]
    with tempfile.TemporaryDirectory(prefix="rim-bench-cost-") as tmp:
        cache = f"cache_dir={tmp}/cache"
        measured = run_plan(load_config(["experiment=rim_voc21", f"data.root={stand_in(Path(tmp), 'rim_voc21')}",
                                         cache, *models, *args.overrides]))
        for experiment in ("rim_context60", "rim_coco_object"):
            print(f"\n=== {experiment} (per-item costs measured above)")
            report = run_plan(load_config([f"experiment={experiment}", f"data.root={stand_in(Path(tmp), experiment)}",
                                           cache, *models, *args.overrides]), measure=False)
            work = report["work"]
            work.extra_unet_steps = measured["work"].extra_unet_steps  # the same generator settings
            print(format_projection(project(measured["timer"], work),
                                    f"\nprojected cost of the whole run on this machine ({measured['device']}):"))


if __name__ == "__main__":
    main()
