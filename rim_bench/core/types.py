"""The data passed between stages, with tensor shapes.

Conventions: images are ``(3, H, W) uint8`` RGB; ground-truth labels are ``(H, W) uint8``
and predicted label maps ``(H, W) int64``, with 255 = ignore (ground truth) or unassigned
(prediction); D is the feature size, N the number of regions in an image, K the number of
references, C the number of classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F

from rim_bench.core.cache_layout import CacheLayout
from rim_bench.core.timing import StageTimer

if TYPE_CHECKING:  # the protocols name these types; at run time any object with the signatures will do
    from rim_bench.core.protocols import DenseFeaturizer, RegionEncoder

IGNORE_INDEX = 255


@dataclass
class Sample:
    """One test image.

    Attributes:
        image: ``(3, H, W) uint8`` RGB.
        label: ``(H, W) uint8`` class ids, 255 = ignore (checked on reading: < C or 255).
        image_id: the id in the split file (also the prediction's file name).
    """

    image: Tensor
    label: Tensor
    image_id: str


@dataclass
class ReferenceBank:
    """K reference features with their class and subcategory.

    Attributes:
        features: ``(K, D) float32``.
        class_ids: ``(K,) int64`` in ``[0, C)``.
        subcategory_ids: ``(K,) int64`` indexes into `subcategory_names`.
        class_names: the C class names of the vocabulary.
        subcategory_names: the distinct subcategory names, ``"class/subcategory"``.
        meta: one dict per reference (source file, mask area, ...), JSON-able.
        derived: what matchers compute from the features once per bank (RIM's log-normalizers),
            by key. Banks are not changed in place, so it never goes stale.
        directory: the cache folder the bank was loaded from or published to, if any; matchers
            may keep what they derive from a large bank there.
    """

    features: Tensor
    class_ids: Tensor
    subcategory_ids: Tensor
    class_names: list[str]
    subcategory_names: list[str]
    meta: list[dict] = field(default_factory=list)
    derived: dict = field(default_factory=dict, repr=False, compare=False)
    directory: Path | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = self.features.shape[0]
        if self.features.ndim != 2 or self.class_ids.shape != (k,) or self.subcategory_ids.shape != (k,):
            raise ValueError(
                f"bank shapes disagree: features {tuple(self.features.shape)}, class_ids "
                f"{tuple(self.class_ids.shape)}, subcategory_ids {tuple(self.subcategory_ids.shape)}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.features.shape[0]

    def to(self, device: torch.device | str) -> ReferenceBank:
        return ReferenceBank(
            self.features.to(device), self.class_ids.to(device), self.subcategory_ids.to(device),
            self.class_names, self.subcategory_names, self.meta, directory=self.directory,
        )


def paint_labels(region_map: Tensor, labels: Tensor) -> Tensor:
    """``(H, W)`` region map, ``(N,)`` region labels → ``(H, W) int64`` label map (255 = unassigned)."""
    # One gather over the pixels: region -1 (none) picks the 255 appended to the labels
    # (`take` reads a negative index from the end, at half the cost of advanced indexing).
    lookup = F.pad(labels.to(region_map.device, torch.long), (0, 1), value=IGNORE_INDEX)
    return lookup.take(region_map.long())


@dataclass
class Prediction:
    """The result of segmenting one image: a region method's regions and their labels (the label
    map is painted from them on first use), or a per-pixel method's label map alone (`of_pixels`).

    Attributes:
        region_map: ``(H, W) int64`` the region each pixel belongs to, -1 = none; None for a
            per-pixel method.
        scores: ``(N, C) float32`` region-to-class scores (None: per-pixel).
        region_labels: ``(N,) int64`` the class given to each region, 255 = unassigned (None: per-pixel).
        painted_regions: ``(H, W) int64`` the region each pixel takes its label from: the region
            map, or with its uncovered pixels given the nearest region (``uncovered: nearest``);
            None (the default) is the region map.
        pixel_labels: ``(H, W) int64`` a per-pixel method's label map, 255 = unassigned.
    """

    region_map: Tensor | None
    scores: Tensor | None
    region_labels: Tensor | None
    painted_regions: Tensor | None = None
    pixel_labels: Tensor | None = None

    @classmethod
    def of_pixels(cls, labels: Tensor) -> Prediction:
        """A per-pixel method's prediction: its ``(H, W)`` label map, no regions."""
        return cls(None, None, None, pixel_labels=labels)

    def __post_init__(self) -> None:
        if self.painted_regions is None:
            self.painted_regions = self.region_map

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name in ("painted_regions", "region_labels"):
            self.__dict__.pop("label_map", None)  # painted again from the new values when read

    @cached_property
    def label_map(self) -> Tensor:
        """``(H, W) int64`` class ids, 255 = unassigned."""
        if self.pixel_labels is not None:
            return self.pixel_labels
        assert self.painted_regions is not None and self.region_labels is not None
        return paint_labels(self.painted_regions, self.region_labels)


@dataclass
class BuildContext:
    """What a reference source needs to build a bank.

    Attributes:
        featurizer, encoder: the test side's stages, so references and regions share features.
        classes: the vocabulary, ``[[name, synonym, ...], ...]`` in label-id order.
        device: where generative and segmentation models run.
        work_dir: the bank's ``.partial`` folder (shards, contact sheets).
        rank, world_size, barrier: this process's share of a sharded build, and a sync point.
        timer: per-stage seconds.
        layout: where sources keep what outlives one bank (generated references), and its keys;
            a bare layout in `work_dir` by default.
    """

    featurizer: DenseFeaturizer
    encoder: RegionEncoder
    classes: list[list[str]]
    device: torch.device
    work_dir: Path
    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = lambda: None
    timer: StageTimer = field(default_factory=StageTimer)
    layout: CacheLayout | None = None

    def __post_init__(self) -> None:
        if self.layout is None:
            self.layout = CacheLayout(self.work_dir)

    @property
    def class_names(self) -> list[str]:
        return [names[0] for names in self.classes]
