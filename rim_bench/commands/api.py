"""RIM on your own images and class names: the Python API behind `rim-bench segment`.

    from rim_bench import RIM

    rim = RIM.from_config("rim_voc21", **{"proposer.sam.checkpoint": "sam_vit_h_4b8939.pth"})
    rim.set_vocabulary(["cat", "sofa", "potted plant"])
    result = rim.segment("living_room.jpg")        # a path, a PIL image or a (3, H, W) tensor
    result.overlay().save("living_room_rim.png")
    print(result.area_shares())                    # {"sofa": 0.41, "cat": 0.12, ...}

The method, the reference bank and the caches are those of `rim-bench test` (both ask the
method of `rim_bench.run.methods`): nothing is implemented twice. Models load once.
`set_vocabulary` builds, or loads from the cache, only the bank (or a per-pixel method's text embeddings);
an image's regions are cached under a hash of its pixels, so segmenting it again under
another vocabulary skips the proposals and features. ``method=NAME`` picks a method file
(configs/method/): ``RIM.from_config("smoke", method="sclip")`` labels pixels with SCLIP.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor

from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.protocols import Method
from rim_bench.core.types import ReferenceBank
from rim_bench.data.base import load_rgb
from rim_bench.data.classes import parse_vocabulary
from rim_bench.run.assembly import Assembly, build_device, experiment_config

ImageLike = str | Path | Image.Image | np.ndarray | Tensor

@dataclass
class SegmentationResult:
    """One segmented image.

    Attributes:
        image: ``(3, H, W) uint8`` the input.
        label_map: ``(H, W) int64`` class ids, 255 = no class.
        region_map: ``(H, W) int64`` region index per pixel, -1 = none (None: a per-pixel method's).
        scores: ``(N, C)`` each region's class scores, higher is better (None: per-pixel).
        region_labels: ``(N,) int64`` each region's class (None: per-pixel).
        class_names: the C names of the vocabulary.
    """

    image: Tensor
    label_map: Tensor
    region_map: Tensor | None
    scores: Tensor | None
    region_labels: Tensor | None
    class_names: list[str]

    def area_shares(self) -> dict[str, float]:
        """Each predicted class's share of the image's pixels, largest first."""
        from rim_bench.run.visualize import area_shares

        return {self.class_names[c]: float(s) for c, s in area_shares(self.label_map.numpy(), len(self.class_names))}

    def overlay(self, title: str = "", max_side: int = 480) -> Image.Image:
        """The image, its regions and the labels side by side, with a legend (a PIL image)."""
        from rim_bench.run.visualize import overlay_panel

        regions = self.region_map.numpy() if self.region_map is not None else None
        return overlay_panel(self.image.permute(1, 2, 0).numpy(), regions, self.label_map.numpy(),
                             None, self.class_names, title, max_side=max_side)


class RIM:
    """A segmentation method with a vocabulary: models loaded once, vocabularies swapped.

    Args:
        cfg: a full config (`load_config`); `from_config` makes one.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.assembly = Assembly(cfg)
        self.cfg, self.timer = self.assembly.cfg, self.assembly.timer
        if self.cfg.data.name == "smoke":  # its exemplar references are generated with the data set
            from rim_bench.run.datasets import build_dataset

            build_dataset(self.cfg.data)
        self.device = build_device(self.cfg)
        self.method: Method = self.assembly.method()
        self.pipeline = self.method.load(self.device)  # the models (`pipeline=regions`: the stages, e.g. .featurizer)
        self.classes: list[list[str]] = []

    @classmethod
    def from_config(cls, config: str | Path | DictConfig = "smoke", **overrides: Any) -> RIM:
        """Build from an experiment name (``configs/experiment/``), a YAML path or a config.

        Args:
            overrides: config values by dotted key, e.g. ``**{"matcher.rim.temperature": 0.1}``
                (``matcher__rim__temperature=0.1`` works too); ``method="sclip"`` a method file.
        """
        return cls(experiment_config(config, overrides))

    @property
    def class_names(self) -> list[str]:
        return [names[0] for names in self.classes]

    def set_vocabulary(self, classes: list[str] | list[list[str]],
                       subcategories: dict[str, list[str]] | None = None) -> ReferenceBank | None:
        """Build (or load from the cache) what the method needs for `classes`: a reference bank, or
        a per-pixel method's text embeddings (``method=sclip`` etc.).

        Args:
            classes: class names; an entry ``"name, synonym, ..."`` or ``[name, synonym, ...]``
                gives synonyms too. Label id i is the i-th class.
            subcategories: phrases per class name for generated references (``{"cat": ["cat",
                "tabby cat", "sphynx"]}``). A class without an entry takes the configured list's,
                else phrases made from its name (`rim_bench.run.vocabulary.VIEW_PHRASES`).
        Returns:
            The bank now in use; None for a method without one.
        """
        vocabulary = parse_vocabulary(classes)
        bank = self.method.set_vocabulary(vocabulary, self.device, subcategories=subcategories or {})
        self.classes = vocabulary
        return bank

    def segment(self, image: ImageLike) -> SegmentationResult:
        """Segment one image with the current vocabulary.

        Args:
            image: a file path, a PIL image, an ``(H, W, 3) uint8`` array, or a ``(3, H, W)``
                tensor (uint8, or float in [0, 1]).
        """
        if not self.classes:
            raise ConfigError("no vocabulary: call set_vocabulary([...class names...]) before segment()")
        pixels = to_image_tensor(image)
        name = str(image) if isinstance(image, (str, Path)) else None  # for error messages
        if not pixels[0].numel():
            raise DataError(f"{name or 'the image'} is empty ({pixels.shape[1]}x{pixels.shape[2]} pixels): "
                            "give an image with at least one pixel")
        prediction = self.method(pixels.to(self.device), image_id=name)
        cpu = lambda t: t.cpu() if t is not None else None  # noqa: E731 - a per-pixel method has no regions
        return SegmentationResult(pixels, prediction.label_map.cpu(), cpu(prediction.region_map),
                                  cpu(prediction.scores), cpu(prediction.region_labels), self.class_names)


def to_image_tensor(image: ImageLike) -> Tensor:
    """Any supported image → ``(3, H, W) uint8`` RGB on the CPU."""
    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise DataError(f"image '{image}' not found")
        return load_rgb(Path(image))
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"an image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()  # a copy: arrays may be read-only
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise DataError(f"an image tensor must be (3, H, W), got {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image.cpu().contiguous()
        if image.is_floating_point() and image.numel() and 0.0 <= float(image.min()) and float(image.max()) <= 1.0:
            return (image.cpu() * 255).round().to(torch.uint8)
        raise DataError("a float image tensor must hold values in [0, 1]; other tensors must be uint8")
    raise DataError(f"cannot segment a {type(image).__name__}: give a path, a PIL image, an array or a tensor")
