"""A peer's settings on one benchmark, as `PixelSegmenter` takes them (read from configs/method/<method>.yaml,
where each value is cited)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rim_bench.core.config import load_config, to_dict
from rim_bench.core.errors import ConfigError
from rim_bench.stages.pixel.text import CLASSES_DIR


@dataclass(frozen=True)
class PixelSettings:
    """One method's inference settings on one benchmark."""

    method: str  # maskclip | sclip | naclip | clearclip | proxyclip: the last block's form
    classes: str  # class file under rim_bench/stages/pixel/classes/
    separator: str  # between the names of a line of the class file
    short_side: int  # test images resized so (Resize(scale=(2048, short_side), keep_ratio=True))
    crop: int  # window side in pixels; 0: the whole image in one pass
    stride: int
    logit_scale: float
    prob_thd: float  # best class probability below it -> class 0
    area_thd: float | None = None  # SCLIP's area rule (VOC21)
    pamr_steps: int = 0
    pamr_dilations: tuple[int, ...] = (8, 16)
    pad_to_patch: bool = False  # pad each window to a multiple of the patch size (ClearCLIP)
    gaussian_std: float = 5.0  # NACLIP's neighbourhood, in patches
    pad_multiple: int = 0  # pad each window to a multiple of it (ProxyCLIP: 56); 0: see pad_to_patch
    proxy: str = "dino"  # ProxyCLIP's proxy model: dino | dinov2 | sam
    beta: float = 1.2  # ProxyCLIP's attention: (cos − beta·mean)·gamma, below 0 masked
    gamma: float = 3.0
    source: str = ""  # the peer's config file these values come from

    @property
    def class_file(self) -> Path:
        return CLASSES_DIR / self.classes


def load_settings(method: str, benchmark: str, **overrides: Any) -> PixelSettings:
    """`method`'s settings on `benchmark` (a name of configs/experiment), with `overrides`: what
    ``rim-bench test experiment=<benchmark> method=<method>`` runs, read from the method file, the one
    place they live (for tests and benchmarks that drive `PixelSegmenter` directly)."""
    cfg = load_config([f"experiment={benchmark}", f"method={method}"])
    if cfg.pipeline != "pixel" or cfg.pixel.name != "clip":
        raise ConfigError(f"method '{method}' is not a per-pixel method on OpenAI CLIP "
                          "(pipeline: pixel, pixel.name: clip)")
    clip = to_dict(cfg.pixel.clip)
    values = {f.name: clip[f.name] for f in fields(PixelSettings)} | overrides
    values["classes"] = values["classes"] or ""
    values["pamr_dilations"] = tuple(values["pamr_dilations"])
    return PixelSettings(**values)
