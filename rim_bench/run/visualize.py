"""Side-by-side pictures of one test image: image, regions, prediction, ground truth, legend.

Written for the first N images of a run with ``save_overlays=N`` (``<output_dir>/overlays/``).
Layout, top to bottom: a title above each of the four panels; the panels; a caption with the
image id and its pixel accuracy; a legend of the classes in the prediction or the ground truth.
Everything is vectorised numpy plus a handful of PIL text calls (a 500x375 image with 200
regions renders in a few tens of milliseconds).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from rim_bench.core.io import atomic_path
from rim_bench.core.types import IGNORE_INDEX
from rim_bench.data.palette import voc_palette

REGION_ALPHA = 0.4    # opacity of the region fills
CLASS_ALPHA = 0.55    # opacity of the class colours
REGION_SEED = 0       # seeds the region colours, so a picture is reproducible
BOUNDARY_RGB = (255, 255, 255)
FONT_SIZE = 12
GAP = 4               # between panels, and around text
SWATCH = 12           # legend colour square, pixels
MAX_NAME = 24         # legend names are cut to this many characters


def legend_classes(prediction: np.ndarray, label: np.ndarray, num_classes: int) -> list[int]:
    """The class ids in ``[0, num_classes)`` present in the prediction or the label, sorted.

    Args:
        prediction, label: ``(H, W)`` integer class ids; 255 (unassigned / ignored) is left out,
            as is any id outside ``[0, num_classes)`` (it has no name).
    """
    counts = np.zeros(max(num_classes, 0), dtype=np.int64)
    for ids in (np.asarray(prediction), np.asarray(label)):
        valid = (ids >= 0) & (ids < num_classes) & (ids != IGNORE_INDEX)
        counts += np.bincount(ids[valid].ravel(), minlength=num_classes)[:num_classes]  # faster than unique
    return [int(c) for c in np.flatnonzero(counts)]


def overlay_panel(image: np.ndarray, region_map: np.ndarray | None, prediction: np.ndarray, label: np.ndarray | None,
                  class_names: list[str], image_id: str, max_side: int = 320) -> Image.Image:
    """One RGB picture: image, regions, prediction and ground truth side by side, with a legend.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        region_map: ``(H, W)`` int region index per pixel, -1 = no region; None (a per-pixel method's
            prediction) leaves out the regions panel.
        prediction: ``(H, W)`` int class ids, 255 = unassigned (shown as the bare image).
        label: ``(H, W)`` int class ids, 255 = ignored (shown as the bare image; not scored);
            None (an image without ground truth) leaves out that panel, and the caption gives
            the predicted classes' shares of the image instead of an accuracy.
        class_names: names by class id, for the legend.
        image_id: shown in the caption with the image's pixel accuracy on scored pixels.
        max_side: each panel is shrunk so its longer side is at most this (never enlarged);
            bilinear for the image, nearest neighbour for the maps.

    Returns:
        An RGB image ``P * w + (P - 1) * GAP`` wide for P panels, where ``(h, w)`` is the shrunk panel size.

    Raises:
        ValueError: `image` is not ``(H, W, 3) uint8`` or a map's shape is not ``(H, W)``.
    """
    has_label, has_regions = label is not None, region_map is not None
    image, prediction = np.asarray(image), np.asarray(prediction)
    region_map = np.asarray(region_map) if has_regions else np.full(np.shape(prediction), -1)
    label = np.asarray(label) if has_label else np.full(np.shape(prediction), IGNORE_INDEX)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    hw = image.shape[:2]
    for name, m in (("region_map", region_map), ("prediction", prediction), ("label", label)):
        if np.shape(m) != hw:
            raise ValueError(f"{name} has shape {np.shape(m)}, the image {hw}")

    # Panel size: the longer side at most max_side, aspect kept.
    scale = min(1.0, max_side / max(hw))
    h, w = max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))
    small = image if (h, w) == hw else np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
    rows, cols = _nearest_index(hw[0], h), _nearest_index(hw[1], w)
    shrink = lambda m: m[rows[:, None], cols[None, :]]  # noqa: E731 - nearest neighbour

    palette = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
    panels = [("image", small)]
    if has_regions:
        panels.append((f"regions ({_count_regions(region_map)})", _region_panel(small, shrink(region_map))))
    panels.append(("prediction", _class_panel(small, shrink(prediction), palette)))
    if has_label:
        panels.append(("ground truth", _class_panel(small, shrink(label), palette)))

    # Text: the caption is computed at full resolution so it matches the metrics' counting.
    scored = label != IGNORE_INDEX
    n_scored = int(scored.sum())
    if not has_label:
        caption = f"{image_id}    " + ", ".join(
            f"{_ascii(class_names[c])} {share:.0%}" for c, share in area_shares(prediction, len(class_names)))
    elif n_scored:
        accuracy = float((prediction[scored] == label[scored]).mean())
        caption = f"{image_id}    pixel accuracy {100 * accuracy:.1f}% of {n_scored:,} scored pixels"
    else:
        caption = f"{image_id}    pixel accuracy n/a (no scored pixels)"
    shown = legend_classes(prediction, label, len(class_names))
    names = [_ascii(class_names[c])[:MAX_NAME] for c in shown]

    font = _font()
    line = _text_height(font) + 2 * GAP
    width = len(panels) * w + (len(panels) - 1) * GAP
    # Legend entries sit in equal columns wide enough for the longest name.
    column = SWATCH + 3 * GAP + max((_text_width(font, n) for n in names), default=0) + 4 * GAP
    per_row = max(1, width // column)
    legend_rows = -(-len(names) // per_row)
    height = line + h + line + legend_rows * line + GAP

    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, panel) in enumerate(panels):
        left = i * (w + GAP)
        draw.text((left + GAP // 2, GAP), title, fill="black", font=font)
        canvas.paste(Image.fromarray(panel), (left, line))
    draw.text((GAP // 2, line + h + GAP), caption, fill="black", font=font)
    top = 2 * line + h
    for n, (c, name) in enumerate(zip(shown, names)):
        x, y = (n % per_row) * column + GAP // 2, top + (n // per_row) * line
        colour = tuple(int(v) for v in palette[c])
        draw.rectangle([x, y + 1, x + SWATCH, y + 1 + SWATCH], fill=colour, outline=(60, 60, 60))
        draw.text((x + SWATCH + GAP + 2, y), name, fill="black", font=font)
    return canvas


def area_shares(prediction: np.ndarray, num_classes: int) -> list[tuple[int, float]]:
    """``(class id, share of the image's pixels)`` for each predicted class, largest first."""
    counts = np.bincount(np.asarray(prediction).ravel(), minlength=256)[:num_classes]
    total = max(1, np.asarray(prediction).size)
    return [(int(c), counts[c] / total) for c in np.argsort(-counts, kind="stable") if counts[c]]


def save_overlay(path: Path, **kwargs) -> None:
    """`overlay_panel(**kwargs)` written atomically as a PNG at `path`."""
    picture = overlay_panel(**kwargs)  # render first: a failure leaves no file at all
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")


def region_boundaries(region_map: np.ndarray) -> np.ndarray:
    """``(H, W) bool``: pixels with a 4-neighbour in another region (-1 counts as one)."""
    edge = np.zeros(region_map.shape, dtype=bool)
    horizontal = region_map[:, 1:] != region_map[:, :-1]
    vertical = region_map[1:, :] != region_map[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge


def region_colours(ids: np.ndarray, seed: int = REGION_SEED) -> np.ndarray:
    """``(len(ids), 3) float32`` vivid random colours, one per region id, reproducible from `seed`.

    Hue is uniform; saturation and value stay high so neighbouring fills are easy to tell apart.
    """
    rng = np.random.default_rng(seed)
    hsv = rng.random((len(ids), 3))
    hsv[:, 1] = 0.45 + 0.45 * hsv[:, 1]
    hsv[:, 2] = 0.75 + 0.25 * hsv[:, 2]
    return _hsv_to_rgb(hsv) * 255


def _region_panel(image: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """``(h, w, 3) uint8``: each region filled in its colour over the image, boundaries drawn.

    Args:
        image: ``(h, w, 3) uint8``; regions: ``(h, w)`` int region index, -1 = no region (left bare).
    """
    ids, inverse = np.unique(regions, return_inverse=True)
    fill = region_colours(ids)[inverse.reshape(regions.shape)]
    out = np.where((regions >= 0)[..., None], (1 - REGION_ALPHA) * image + REGION_ALPHA * fill, image)
    out[region_boundaries(regions)] = BOUNDARY_RGB
    return out.astype(np.uint8)


def _class_panel(image: np.ndarray, ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``(h, w, 3) uint8``: class colours blended over the image; 255 keeps the bare image.

    Args:
        image: ``(h, w, 3) uint8``; ids: ``(h, w)`` int class ids; palette: ``(256, 3) uint8``.
    """
    colour = palette[np.clip(ids, 0, 255)].astype(np.float32)
    blended = ((1 - CLASS_ALPHA) * image + CLASS_ALPHA * colour).round()
    return np.where((ids == IGNORE_INDEX)[..., None], image, blended).astype(np.uint8)


def _count_regions(region_map: np.ndarray) -> int:
    """The number of distinct region ids >= 0 in ``(H, W)`` `region_map`."""
    ids = region_map[region_map >= 0]
    if ids.size == 0:
        return 0
    if ids.max() < 4 * ids.size:  # dense ids (the usual 0..N-1): bincount is ~10x faster than unique
        return int(np.count_nonzero(np.bincount(ids)))
    return int(np.unique(ids).size)


def _nearest_index(size: int, new_size: int) -> np.ndarray:
    """``(new_size,) int``: source index of each output pixel, sampling pixel centres."""
    return np.minimum(((np.arange(new_size) + 0.5) * size / new_size).astype(np.int64), size - 1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """``(N, 3)`` HSV in [0, 1] to ``(N, 3) float32`` RGB in [0, 1]."""
    h, s, v = hsv[:, 0] * 6, hsv[:, 1], hsv[:, 2]
    # Standard formula: each channel is v minus a piecewise-linear share of the saturation.
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None]) % 6
    return (v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(np.float32)


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at FONT_SIZE; the fixed-size bitmap one on Pillow < 10.1 or without FreeType."""
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except (TypeError, OSError, ImportError, AttributeError):
        return ImageFont.load_default()


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def _text_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    return int(font.getbbox("Hg")[3])  # from the drawing origin, so ascenders are not clipped


def _ascii(text: str) -> str:
    """PIL's default font draws ASCII only: anything else becomes '?'."""
    return text.encode("ascii", "replace").decode()


def save_label_png(label_map: torch.Tensor, path: Path) -> None:
    """Write an ``(H, W)`` label map as a VOC palette PNG (pixel value = class id, 255 = none)."""
    img = Image.fromarray(label_map.to(torch.uint8).cpu().numpy())  # mode "L"
    img.putpalette(voc_palette())  # turns it into mode "P", indices unchanged
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
