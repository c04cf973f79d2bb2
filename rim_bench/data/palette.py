"""PASCAL VOC's colour palette, for label PNGs and overlays."""

from __future__ import annotations


def voc_palette() -> list[int]:
    """The 256-entry VOC colormap as a flat ``[r0, g0, b0, r1, ...]`` list.

    Colour i spreads the bits of i over the three channels, most significant first
    (VOC devkit's `labelcolormap`); entry 255 is (224, 224, 192), the boundary colour.
    """
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        value = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette.extend(rgb)
    return palette
