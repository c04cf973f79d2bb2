"""The test-time resize of mmseg's ``Resize(scale=(2048, short_side), keep_ratio=True)``, which
the peers evaluate with and our featurizers follow: one scale for both sides, the short side to
`short_side` unless that would make the long side exceed `MAX_LONG_SIDE` (a 2 x 3000 image
would otherwise reach a model as 128 x 192,000 pixels)."""

from __future__ import annotations

MAX_LONG_SIDE = 2048


def keep_ratio_scale(height: int, width: int, short_side: int) -> float:
    """The factor mmseg's keep-ratio Resize applies to an image of `height` x `width`."""
    return min(short_side / min(height, width), MAX_LONG_SIDE / max(height, width))
