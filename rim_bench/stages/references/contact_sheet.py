"""A contact sheet per class: what each reference was made from, to look at rather than read.

Columns: generated image, class-word attention heat map, binarized map (τ), final mask
over the image. One row per reference; dropped references show an empty mask cell.
Rows are rendered per subcategory into strips, which are stored with the generated
references, so a bank assembled from stored references still gets its sheets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from rim_bench.core.io import atomic_path

CELL = 128
LABEL_WIDTH = 180
HEADER = 22
COLUMNS = ("image", "attention", "binarized", "mask")
WIDTH = LABEL_WIDTH + CELL * len(COLUMNS)


def sheet_row(label: str, image: np.ndarray, attention: np.ndarray, binary: np.ndarray,
              mask: np.ndarray | None) -> Image.Image:
    """One reference as a ``CELL``-high row.

    Args: ``(H, W, 3) uint8`` image, ``(H, W)`` attention in [0, 1], ``(H, W) bool`` binary
    map and mask (None or empty: the reference was dropped).
    """
    heat = (colormaps["inferno"](attention)[..., :3] * 255).astype(np.uint8)
    binary_rgb = np.repeat((binary * 255).astype(np.uint8)[..., None], 3, axis=2)
    if mask is None or not mask.any():
        masked = np.full_like(image, 40)
    else:  # the object at full brightness, the rest dimmed
        masked = np.where(mask[..., None], image, (image * 0.25).astype(np.uint8))
    row = Image.new("RGB", (WIDTH, CELL), "white")
    ImageDraw.Draw(row).text((6, CELL // 2 - 6), label[:28], fill="black")
    for col, array in enumerate((image, heat, binary_rgb, masked)):
        row.paste(Image.fromarray(array).resize((CELL, CELL), Image.Resampling.BILINEAR), (LABEL_WIDTH + col * CELL, 0))
    return row


def stack(rows: list[Image.Image]) -> Image.Image:
    """Rows (or strips of rows) one below the other."""
    strip = Image.new("RGB", (WIDTH, sum(r.height for r in rows)), "white")
    top = 0
    for row in rows:
        strip.paste(row, (0, top))
        top += row.height
    return strip


def save_contact_sheet(path: Path, title: str, strips: list[Image.Image]) -> None:
    """A title, the column names, then the strips; written atomically."""
    body = stack(strips)
    sheet = Image.new("RGB", (WIDTH, 2 * HEADER + body.height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 4), title, fill="black")
    for col, name in enumerate(COLUMNS):
        draw.text((LABEL_WIDTH + col * CELL + 6, HEADER + 4), name, fill="black")
    sheet.paste(body, (0, 2 * HEADER))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
