"""RIM on your own images and class names: the Python API behind `rim-bench segment`.

    from rim_bench import RIM

    rim = RIM.from_config("rim_voc21", **{"proposer.sam.checkpoint": "sam_vit_h_4b8939.pth"})
    rim.set_vocabulary(["cat", "sofa", "potted plant"])
    result = rim.segment("living_room.jpg")        # a path, a PIL image or a (3, H, W) tensor
    result.overlay().save("living_room_rim.png")
    print(result.area_shares())                    # {"sofa": 0.41, "cat": 0.12, ...}

The stages, the reference bank and the caches are those of `rim-bench test` (both build
through `rim_bench.run.assembly.Assembly`): nothing is implemented twice. Models load once.
`set_vocabulary` builds, or loads from the cache, only the bank;
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
import yaml
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor

from rim_bench.core.cache_layout import CacheLayout
from rim_bench.core.config import generates_references
from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.io import atomic_write_text
from rim_bench.core.types import ReferenceBank
from rim_bench.data.base import load_rgb
from rim_bench.data.classes import parse_vocabulary
from rim_bench.run.assembly import Assembly, build_device, experiment_config
from rim_bench.run.pipeline import PixelPipeline, SegmentationPipeline
from rim_bench.stages.references.subcategory_lists import subcategory_file

ImageLike = str | Path | Image.Image | np.ndarray | Tensor

# Phrases for a class without subcategories of its own: views and settings of the class
# itself (ours), so every prompt names the class. Real subcategories ("tabby cat",
# "sphynx") are better; pass them to `set_vocabulary` when you have them.
VIEW_PHRASES = ("{}", "close-up {}", "small {}", "large {}", "{} outdoors", "{} indoors", "{} from above",
                "{} from the side", "old {}", "colorful {}")


@dataclass
class SegmentationResult:
    """One segmented image.

    Attributes:
        image: ``(3, H, W) uint8`` the input.
        label_map: ``(H, W) int64`` class ids, 255 = no class.
        region_map: ``(H, W) int64`` region index per pixel, -1 = none.
        scores: ``(N, C)`` each region's class scores (higher is better).
        region_labels: ``(N,) int64`` each region's class.
        class_names: the C names of the vocabulary.
    """

    image: Tensor
    label_map: Tensor
    region_map: Tensor
    scores: Tensor
    region_labels: Tensor
    class_names: list[str]

    def area_shares(self) -> dict[str, float]:
        """Each predicted class's share of the image's pixels, largest first."""
        from rim_bench.run.visualize import area_shares

        return {self.class_names[c]: float(s) for c, s in area_shares(self.label_map.numpy(), len(self.class_names))}

    def overlay(self, title: str = "", max_side: int = 480) -> Image.Image:
        """The image, its regions and the labels side by side, with a legend (a PIL image)."""
        from rim_bench.run.visualize import overlay_panel

        return overlay_panel(self.image.permute(1, 2, 0).numpy(), self.region_map.numpy(), self.label_map.numpy(),
                             None, self.class_names, title, max_side=max_side)


class RIM:
    """A segmentation pipeline with a vocabulary: models loaded once, banks swapped.

    Args:
        cfg: a full config (`load_config`); `from_config` makes one.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.assembly = Assembly(cfg)
        self.cfg, self.timer = self.assembly.cfg, self.assembly.timer
        if self.cfg.data.name == "smoke":  # its exemplar references are generated with the data set
            from rim_bench.run.datamodule import build_dataset  # lazily: it loads Lightning

            build_dataset(self.cfg.data)
        self.device = build_device(self.cfg)
        self.pipeline: SegmentationPipeline | PixelPipeline = (
            self.assembly.pixel_pipeline() if self.assembly.per_pixel else self.assembly.pipeline()).to(self.device)
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
        """Build (or load from the cache) the reference bank for `classes`.

        Args:
            classes: class names; an entry ``"name, synonym, ..."`` or ``[name, synonym, ...]``
                gives synonyms too. Label id i is the i-th class.
            subcategories: phrases per class name for generated references (``{"cat": ["cat",
                "tabby cat", "sphynx"]}``). A class without an entry takes the configured list's,
                else phrases made from its name (`VIEW_PHRASES`).
        Returns:
            The bank now in use; None for a per-pixel method (``method=sclip`` etc.: no bank, the
            names' text embeddings instead).
        """
        vocabulary = parse_vocabulary(classes)
        if isinstance(self.pipeline, PixelPipeline):
            self.pipeline.set_vocabulary(vocabulary)
            self.classes = vocabulary
            return None
        cfg = self.cfg.copy()
        OmegaConf.set_readonly(cfg, False)  # this vocabulary's own reference settings, on a copy
        if generates_references(cfg):
            cfg.references.diffusion.subcategories = str(self._subcategory_file(cfg, vocabulary, subcategories))
        elif subcategories:
            raise ConfigError("subcategories= needs generated references (references.name=diffusion or mixed)")
        names = [line[0] for line in vocabulary]
        segmenter = self.assembly.segmenter(names)  # before the bank: a bad rule fails at once
        with self.timer("reference bank"):
            bank = self.assembly.bank(vocabulary, self.device, cfg=cfg).bank
        assert isinstance(self.pipeline, SegmentationPipeline)
        self.pipeline.segmenter = segmenter
        self.pipeline.set_bank(bank)
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
        prediction = self.pipeline(pixels.to(self.device), image_id=name)
        return SegmentationResult(pixels, prediction.label_map.cpu(), prediction.region_map.cpu(),
                                  prediction.scores.cpu(), prediction.region_labels.cpu(), self.class_names)

    def _subcategory_file(self, cfg: DictConfig, vocabulary: list[list[str]],
                          given: dict[str, list[str]] | None) -> Path:
        """Write this vocabulary's subcategory table (a YAML file named by its content), every
        time: a copy left from before, perhaps altered, is never read."""
        table = subcategory_table([line[0] for line in vocabulary], given, cfg.references.diffusion.subcategories)
        text = yaml.safe_dump(table, allow_unicode=True, sort_keys=False)
        path = CacheLayout.of(cfg).vocabulary_file(table)
        atomic_write_text(path, text)  # atomic: processes writing the same table at once are safe
        return path



def subcategory_table(names: list[str], given: dict[str, list[str]] | None,
                      configured: str | None) -> dict[str, list[str]]:
    """Per class: its `given` phrases, else the `configured` list's, else `VIEW_PHRASES`."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"subcategories for {unknown} name no class of the vocabulary {names}")
    shipped: dict[str, Any] = {}
    if configured is not None:
        shipped = yaml.safe_load(subcategory_file(configured).read_text()) or {}
    table = {}
    for name in names:
        phrases = given.get(name) or shipped.get(name) or [p.format(name) for p in VIEW_PHRASES]
        if isinstance(phrases, str) or not all(isinstance(p, str) and p.strip() for p in phrases):
            raise ConfigError(f"subcategories['{name}'] must be a list of non-empty phrases, got {phrases!r}")
        table[name] = list(dict.fromkeys([name, *(p.strip() for p in phrases)]))  # the class itself first
    return table


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
