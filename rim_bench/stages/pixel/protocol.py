"""The peers' settings per benchmark (protocols/<method>.yaml, each value cited there)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rim_bench.core.errors import ConfigError

PROTOCOLS_DIR = Path(__file__).with_name("protocols")
CLASSES_DIR = Path(__file__).with_name("classes")


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


def methods() -> list[str]:
    return sorted(p.stem for p in PROTOCOLS_DIR.glob("*.yaml"))


def load_settings(method: str, benchmark: str, **overrides: Any) -> PixelSettings:
    """`method`'s settings on `benchmark` (a name of configs/experiment), with `overrides`."""
    path = PROTOCOLS_DIR / f"{method}.yaml"
    if not path.is_file():
        raise ConfigError(f"method: unknown pixel method '{method}' (choose {', '.join(methods())})")
    data = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(data, dict)
    if benchmark not in data["benchmarks"]:
        raise ConfigError(f"{path}: no settings for benchmark '{benchmark}' "
                          f"(choose {', '.join(data['benchmarks'])})")
    values = {"method": data["method"], "separator": data["separator"], **data["defaults"],
              **data["benchmarks"][benchmark], **overrides}
    known = {f.name for f in fields(PixelSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if "pamr_dilations" in values:
        values["pamr_dilations"] = tuple(values["pamr_dilations"])
    return PixelSettings(**values)
