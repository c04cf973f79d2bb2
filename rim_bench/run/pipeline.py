"""The per-image RIM pipeline: regions → dense features → region features → scores → label map;
or a per-pixel method's (`PixelPipeline`). `rim_bench.run.methods` puts each behind the `Method` seam.

`SegmentationPipeline` is the one implementation every entry point uses (the LightningModule,
the Python API and `rim-bench segment`); `rim_bench.run.assembly` builds it from a config.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.protocols import (
    DenseFeaturizer,
    Matcher,
    PixelLabeler,
    RegionEncoder,
    RegionProposer,
    ResolvesSettings,
    Segmenter,
)
from rim_bench.core.timing import StageTimer
from rim_bench.core.types import Prediction, ReferenceBank
from rim_bench.run.region_cache import RegionCache
from rim_bench.stages.segmenter import resolve_regions


class SegmentationPipeline(nn.Module):
    """Segments one image against a reference bank.

    The featurizer is the only stage with weights; as a submodule it follows the
    LightningModule to its device.
    """

    def __init__(
        self, proposer: RegionProposer, featurizer: DenseFeaturizer, encoder: RegionEncoder,
        matcher: Matcher, segmenter: Segmenter | None, timer: StageTimer | None = None,
        region_cache: RegionCache | None = None,
    ) -> None:
        super().__init__()
        self.proposer = proposer
        self.featurizer = featurizer
        self.encoder = encoder
        self.matcher = matcher
        self.segmenter = segmenter
        self.timer = timer or StageTimer()
        self.region_cache = region_cache
        self.bank: ReferenceBank | None = None

    def set_bank(self, bank: ReferenceBank) -> None:
        if len(bank) == 0:
            raise ConfigError("the reference bank is empty: every class needs at least one reference")
        if bank.features.shape[1] != self.featurizer.feature_dim:
            raise ConfigError(
                f"the bank's features have {bank.features.shape[1]} dims but the featurizer gives "
                f"{self.featurizer.feature_dim}: rebuild the bank with this featurizer"
            )
        if not torch.isfinite(bank.features).all():
            raise ConfigError("the reference bank has non-finite features (NaN or inf): check the featurizer's "
                              "weights and the reference images")
        self.bank = bank

    def resolved_settings(self) -> dict[str, float]:
        """The settings the matcher chose at run time for the current bank (``auto``), by config key."""
        if self.bank is None or not isinstance(self.matcher, ResolvesSettings):
            return {}
        return self.matcher.resolved(self.bank)

    @torch.no_grad()
    def forward(self, image: Tensor, image_id: str | None = None) -> Prediction:
        """Segment a ``(3, H, W) uint8`` image; see `Prediction` for the shapes.

        With a region cache, the regions and their features are read from (or written to)
        the cache under the image's content (`image_digest`); `image_id` names the image in errors.
        """
        if self.bank is None or self.segmenter is None:
            raise RuntimeError("set_bank() (and a segmenter for the vocabulary) must come before segmenting")
        cache = self.region_cache
        key = image_digest(image) if cache else None
        cached = cache.get(key, (image.shape[-2], image.shape[-1])) if cache and key else None
        if cached is None:
            region_map, regions = self.regions(image, image_id)
            if cache and key:
                cache.put(key, region_map, regions)
        else:
            region_map, regions = cached
        device = next(self.featurizer.parameters()).device
        region_map, regions = region_map.to(device), regions.to(device)
        with self.timer("matching"):
            if self.bank.features.device != device:
                self.bank = self.bank.to(device)
            scores = self.matcher(regions, self.bank)
        with self.timer("painting"):  # the regions' labels; the label map itself is painted where it is used
            region_labels, painted_regions = self.segmenter(region_map, scores)
        return Prediction(region_map, scores, region_labels, painted_regions)

    def regions(self, image: Tensor, image_id: str | None = None) -> tuple[Tensor, Tensor]:
        """``(3, H, W) uint8`` → ``(H, W) int64`` region map (-1 = none) and ``(N, D)`` region features."""
        device = next(self.featurizer.parameters()).device
        with self.timer("proposals"):
            proposals = self.proposer(image).to(device)
            if proposals.ndim == 3:
                proposals = proposals[proposals.flatten(1).any(1)]  # an empty proposal has no feature
        with self.timer("features"):
            dense = self.featurizer(image.to(device))
        with self.timer("pooling"):
            regions = self.encoder(proposals, dense)
            if not torch.isfinite(regions).all():
                raise DataError(f"image '{image_id}': non-finite region features (NaN or inf): check the "
                                "featurizer's weights (featurizer.dinov2.model) and the image")
        with self.timer("region map"):  # overlaps resolved once, cached with the regions
            region_map = resolve_regions(proposals) if proposals.ndim == 3 else proposals.long()
        return region_map, regions


class PixelPipeline(nn.Module):
    """A per-pixel method (a `PixelLabeler`, ``pixel.name``) over a vocabulary: no regions, no bank."""

    def __init__(self, stage: PixelLabeler, timer: StageTimer | None = None) -> None:
        super().__init__()
        self.stage = stage
        self.model = stage.module  # a submodule, so it follows the LightningModule to its device
        self.timer = timer or StageTimer()
        self.labeller: Callable[[Tensor], Tensor] | None = None
        self.num_classes = 0

    def set_vocabulary(self, vocabulary: list[list[str]]) -> None:
        """Embed the query names of `vocabulary` (read from the text cache when embedded before)."""
        with self.timer("text embeddings"):
            self.labeller = self.stage.for_vocabulary(vocabulary)
        self.num_classes = len(vocabulary)

    def resolved_settings(self) -> dict[str, str]:
        """Settings the labeller chose at run time (a peer's dtype), by config key: a labeller may say them
        through a ``resolved_settings()`` of its own; its other settings are all in its config."""
        said = getattr(self.labeller, "resolved_settings", None)
        return said() if said is not None else {}

    @torch.no_grad()
    def forward(self, image: Tensor, image_id: str | None = None) -> Prediction:
        """Segment a ``(3, H, W) uint8`` image: its label map, no regions (`Prediction.of_pixels`)."""
        if self.labeller is None:
            raise RuntimeError("set_vocabulary() must come before segmenting")
        with self.timer("pixel method"):
            device = next(self.model.parameters()).device
            return Prediction.of_pixels(self.labeller(image.to(device)).long())


def image_digest(image: Tensor) -> str:
    """A name for an image's pixels: the same image gets the same name from a data set, a file or an array."""
    digest = hashlib.sha256(image.contiguous().cpu().numpy().data)  # the pixels' buffer, not a copy of it
    digest.update(str(tuple(image.shape)).encode())
    return "sha256-" + digest.hexdigest()[:32]

