"""Side-by-side pictures of one test image: image, regions, prediction, ground truth, legend.

Written for the first N images of a run with ``save_overlays=N`` (``<output_dir>/overlays/``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rim_bench.data.palette import voc_palette
from rim_bench.io import atomic_path
from rim_bench.types import IGNORE_INDEX

TITLE = 18
GAP = 4
SWATCH = 12
LEGEND_ROW = 16
LEGEND_COLUMN = 170
REGION_ALPHA = 0.4
CLASS_ALPHA = 0.55


def legend_classes(prediction: np.ndarray, label: np.ndarray, num_classes: int) -> list[int]:
    """The class ids present in the prediction or the ground truth (255 left out), sorted."""
    present = np.union1d(np.unique(prediction), np.unique(label))
    return [int(c) for c in present if 0 <= c < num_classes]


def overlay_panel(image: np.ndarray, region_map: np.ndarray, prediction: np.ndarray, label: np.ndarray,
                  class_names: list[str], image_id: str, max_side: int = 320) -> Image.Image:
    """One RGB picture: four panels side by side and a legend of the classes shown.

    Args:
        image: ``(H, W, 3) uint8``.
        region_map: ``(H, W) int64`` region index per pixel, -1 = no region.
        prediction, label: ``(H, W) int64`` class ids, 255 = unassigned / ignored (shown unblended).
        class_names: names by class id, for the legend.
        image_id: shown in the caption with the image's pixel accuracy.
        max_side: each panel's longer side, at most.
    """
    palette = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
    scale = min(1.0, max_side / max(image.shape[:2]))
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))  # (W, H) for PIL
    small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    shrink = lambda a: np.asarray(Image.fromarray(a.astype(np.int32)).resize(size, Image.NEAREST))  # noqa: E731
    regions, pred, gt = shrink(region_map), shrink(prediction), shrink(label)

    panels = [("image", small), (f"regions ({int(region_map.max()) + 1})", _regions(small, regions)),
              ("prediction", _classes(small, pred, palette)), ("ground truth", _classes(small, gt, palette))]
    shown = legend_classes(prediction, label, len(class_names))
    per_row = max(1, (4 * (size[0] + GAP)) // LEGEND_COLUMN)
    legend_height = LEGEND_ROW * (-(-len(shown) // per_row)) + GAP
    width = 4 * size[0] + 3 * GAP
    canvas = Image.new("RGB", (width, TITLE + size[1] + TITLE + legend_height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, panel) in enumerate(panels):
        left = i * (size[0] + GAP)
        draw.text((left + 2, 3), title, fill="black")
        canvas.paste(Image.fromarray(panel), (left, TITLE))
    scored = label != IGNORE_INDEX
    accuracy = float((prediction[scored] == label[scored]).mean()) if scored.any() else float("nan")
    draw.text((2, TITLE + size[1] + 3), f"{image_id}   pixel accuracy {100 * accuracy:.1f}%", fill="black")
    top = 2 * TITLE + size[1]
    for n, c in enumerate(shown):
        x, y = (n % per_row) * LEGEND_COLUMN, top + (n // per_row) * LEGEND_ROW
        draw.rectangle([x + 2, y, x + 2 + SWATCH, y + SWATCH], fill=tuple(int(v) for v in palette[c]), outline="black")
        draw.text((x + SWATCH + 6, y), _ascii(class_names[c])[:24], fill="black")
    return canvas


def save_overlay(path: Path, **kwargs) -> None:
    """`overlay_panel(**kwargs)` written atomically as a PNG."""
    with atomic_path(path) as tmp:
        overlay_panel(**kwargs).save(tmp, format="PNG")


def _classes(image: np.ndarray, ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class colours blended over the image; 255 (unassigned / ignored) keeps the image."""
    colour = palette[np.clip(ids, 0, 255)].astype(np.float32)
    blended = (1 - CLASS_ALPHA) * image + CLASS_ALPHA * colour
    return np.where((ids == IGNORE_INDEX)[..., None], image, blended).astype(np.uint8)


def _regions(image: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Each region in a seeded random colour over the image, with its boundary in white."""
    colours = np.random.default_rng(0).integers(0, 256, (int(regions.max()) + 2, 3)).astype(np.float32)
    fill = colours[regions + 1]  # -1 (no region) → row 0
    out = np.where((regions >= 0)[..., None], (1 - REGION_ALPHA) * image + REGION_ALPHA * fill, image)
    edge = np.zeros(regions.shape, dtype=bool)
    edge[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    edge[:-1, :] |= regions[:-1, :] != regions[1:, :]
    out[edge] = 255
    return out.astype(np.uint8)


def _ascii(text: str) -> str:
    """PIL's default bitmap font draws ASCII only."""
    return text.encode("ascii", "replace").decode()
