"""A contact sheet per class: what each reference was made from, to look at rather than read.

Columns: generated image, class-word attention heat map, binarized map (τ), final mask
over the image. One row per reference; dropped references show an empty mask cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from rim_bench.io import atomic_path

CELL = 128
LABEL_WIDTH = 180
HEADER = 22
COLUMNS = ("image", "attention", "binarized", "mask")


class ContactSheet:
    """Collects rows, then writes one PNG."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, list[Image.Image]]] = []

    def add_row(self, label: str, image: np.ndarray, attention: np.ndarray, binary: np.ndarray,
                mask: np.ndarray | None) -> None:
        """Args: ``(H, W, 3) uint8`` image, ``(H, W)`` attention in [0, 1], ``(H, W) bool`` binary and mask."""
        heat = (colormaps["inferno"](attention)[..., :3] * 255).astype(np.uint8)
        binary_rgb = np.repeat((binary * 255).astype(np.uint8)[..., None], 3, axis=2)
        if mask is None or not mask.any():
            masked = np.full_like(image, 40)
        else:  # the object at full brightness, the rest dimmed
            masked = np.where(mask[..., None], image, (image * 0.25).astype(np.uint8))
        cells = [Image.fromarray(a).resize((CELL, CELL), Image.BILINEAR) for a in (image, heat, binary_rgb, masked)]
        self.rows.append((label, cells))

    def save(self, path: Path) -> None:
        width = LABEL_WIDTH + CELL * len(COLUMNS)
        sheet = Image.new("RGB", (width, 2 * HEADER + CELL * len(self.rows)), "white")
        draw = ImageDraw.Draw(sheet)
        draw.text((6, 4), self.title, fill="black")
        for col, name in enumerate(COLUMNS):
            draw.text((LABEL_WIDTH + col * CELL + 6, HEADER + 4), name, fill="black")
        for row, (label, cells) in enumerate(self.rows):
            top = 2 * HEADER + row * CELL
            draw.text((6, top + CELL // 2 - 6), label[:28], fill="black")
            for col, cell in enumerate(cells):
                sheet.paste(cell, (LABEL_WIDTH + col * CELL, top))
        with atomic_path(path) as tmp:
            sheet.save(tmp, format="PNG")
