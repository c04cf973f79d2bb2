"""SAM's automatic masks: rim-bench's generator against segment-anything's, side by side in one run.

    python benchmarks/sam_masks.py --quick          # small random SAM, 8 x 8 points, one image (a minute or two)
    python benchmarks/sam_masks.py                  # ViT-B at real size, 32 x 32 points, two photographs
    python benchmarks/sam_masks.py --models vit_h --images 1
    python benchmarks/sam_masks.py --models --sam2 sam2.1_hiera_t sam2.1_hiera_l --images 1   # SAM 2 alone

Both generators run on the same random weights (seed 0; real-size models are built by segment-anything's
own `sam_model_registry`, as tests/make_real_size_fixtures.py builds them; ``--quick`` builds a 2-block
encoder with `segment_anything.build_sam._build_sam`, the prompt decoder at its real size) and the same
photographs (scikit-image's sample images: real structure, sizes of a benchmark's photos), at the same
settings: the points grid, ``points_per_batch`` 64, ``pred_iou_thresh`` and ``stability_score_thresh`` 0
(random weights predict low IoUs) and ``box_nms_thresh`` 1.0 by default: random weights give each point
masks of about the whole image, which NMS at 0.7 reduces to one; at 1.0 NMS still runs (the same
cost) and every candidate mask is compared. Each image runs segment-anything's generator and ours
once, in alternating order, on one torch thread. Times are the process's CPU seconds (one thread:
its compute, whatever else shares the cores), with the wall-clock seconds beside them. ``--sam2``
times the sam2 package's `SAM2AutomaticMaskGenerator` (random weights, the package's own configs)
at the same settings on the same images (its masks are another model's: not compared).

Prints each image's seconds, then per model the total, the speed ratio (theirs / ours) and the fraction of
their masks that ours reproduce at IoU >= 0.99 (both sets sorted by prompt point and area, compared in
pairs), and ends with one line ``ratio X.XX masks-equal Y.YYYY`` over every model run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
from segment_anything.build_sam import _build_sam

from rim_bench.stages.proposals.sam_masks import SamMaskGenerator

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")  # skimage.data: 400x600, 300x451, 512x512, 427x640


def photos(n: int, long_side: int | None) -> list[tuple[str, np.ndarray]]:
    from skimage import data

    out = []
    for name in PHOTOS[:n]:
        image = getattr(data, name)()
        if long_side:
            scale = long_side / max(image.shape[:2])
            image = np.array(Image.fromarray(image).resize((round(image.shape[1] * scale),
                                                           round(image.shape[0] * scale))))
        out.append((name, image))
    return out


def build(model: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if model == "small":  # the real prompt encoder and decoder, a 2-block 64-wide image encoder
        return _build_sam(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
                          encoder_global_attn_indexes=[1], checkpoint=None).eval()
    return sam_model_registry[model](checkpoint=None).eval()


def sorted_masks(masks: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` ordered by prompt point (x, y), then area."""
    areas = masks.reshape(len(masks), -1).sum(1)
    return masks[np.lexsort((areas, points[:, 1], points[:, 0]))]


def equal_fraction(theirs: np.ndarray, ours: np.ndarray) -> tuple[int, int]:
    """How many of `theirs` have their counterpart in `ours` at IoU >= 0.99 (pairs after sorting)."""
    same = 0
    for a, b in zip(theirs, ours):
        union = np.logical_or(a, b).sum()
        same += int(union == 0 or np.logical_and(a, b).sum() / union >= 0.99)
    return same, len(theirs)


def timed(fn, *args):
    """``fn(*args)``, its CPU seconds and its wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def run(model: str, images: list[tuple[str, np.ndarray]], settings: dict) -> tuple[float, float, int, int]:
    sam = build(model)
    theirs_gen = SamAutomaticMaskGenerator(sam, output_mode="binary_mask", **settings)
    ours_gen = SamMaskGenerator(sam, **settings)
    total_theirs = total_ours = 0.0
    same = count = 0
    for i, (name, image) in enumerate(images):
        times, walls = {}, {}
        order = ("theirs", "ours") if i % 2 == 0 else ("ours", "theirs")
        for who in order:
            if who == "theirs":
                records, times[who], walls[who] = timed(theirs_gen.generate, image)
            else:
                result, times[who], walls[who] = timed(ours_gen, image)
        their_masks = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, *image.shape[:2]))
        their_points = np.array([r["point_coords"][0] for r in records]).reshape(-1, 2)
        s, c = equal_fraction(sorted_masks(their_masks, their_points),
                              sorted_masks(result.masks.numpy(), result.points.numpy()))
        same, count = same + s, count + c
        total_theirs, total_ours = total_theirs + times["theirs"], total_ours + times["ours"]
        print(f"{model} {name} {image.shape[1]}x{image.shape[0]}: segment-anything {times['theirs']:.1f} s CPU "
              f"({walls['theirs']:.0f} s wall), ours {times['ours']:.1f} s CPU ({walls['ours']:.0f} s wall), "
              f"x{times['theirs'] / times['ours']:.2f}; masks {len(records)} / {len(result.masks)}, {s} equal; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{model}: per image segment-anything {total_theirs / len(images):.1f} s, ours {total_ours / len(images):.1f}"
          f" s (CPU), ratio {total_theirs / total_ours:.2f}, masks-equal {same / max(count, 1):.4f} ({same} of "
          f"{count})", flush=True)
    return total_theirs, total_ours, same, count


def run_sam2(model: str, images: list[tuple[str, np.ndarray]], settings: dict) -> None:
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    sam2 = build_sam2(f"configs/{model.split('_')[0]}/{model}.yaml", None, device="cpu")
    generator = SAM2AutomaticMaskGenerator(sam2, output_mode="binary_mask", **settings)
    total = 0.0
    for name, image in images:
        records, cpu, wall = timed(generator.generate, image)
        total += cpu
        print(f"{model} {name} {image.shape[1]}x{image.shape[0]}: SAM2AutomaticMaskGenerator {cpu:.1f} s CPU "
              f"({wall:.0f} s wall); masks {len(records)}; load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{model}: per image {total / len(images):.1f} s (CPU)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small SAM, 8 x 8 points, one image")
    parser.add_argument("--models", nargs="*", default=["vit_b"], choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--sam2", nargs="*", default=[], help="also time SAM 2, e.g. sam2.1_hiera_t sam2.1_hiera_l")
    parser.add_argument("--points", type=int, default=32, help="points per side")
    parser.add_argument("--images", type=int, default=2, help=f"how many of {', '.join(PHOTOS)}")
    parser.add_argument("--long-side", type=int, default=500, help="resize photos to this long side (VOC's 500)")
    parser.add_argument("--box-nms-thresh", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models, points, n_images = (["small"], 8, 1) if args.quick else (args.models, args.points, args.images)
    settings = dict(points_per_side=points, points_per_batch=64, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                    box_nms_thresh=args.box_nms_thresh)
    print(f"settings {settings}; torch {torch.__version__}, 1 thread; load {os.getloadavg()}", flush=True)
    images = photos(n_images, args.long_side)
    totals = [run(model, images, settings) for model in models]
    for model in [] if args.quick else args.sam2:
        run_sam2(model, images, settings)
    print(f"load {os.getloadavg()}")
    if totals:
        theirs, ours, same, count = (sum(t[i] for t in totals) for i in range(4))
        print(f"ratio {theirs / ours:.2f} masks-equal {same / max(count, 1):.4f}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
