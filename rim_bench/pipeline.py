"""The per-image RIM pipeline: regions → dense features → region features → scores → label map.

`SegmentationPipeline` is the one implementation every entry point uses (the test
LightningModule now; the Python API and `rim-bench segment` later).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from rim_bench.protocols import DenseFeaturizer, Matcher, RegionEncoder, RegionProposer, Segmenter
from rim_bench.config import config_hash, key_spec
from rim_bench.errors import ConfigError, DataError
from rim_bench.registry import ENCODERS, FEATURIZERS, MATCHERS, PROPOSERS, SEGMENTERS, build_stage
from rim_bench.timing import StageTimer
from rim_bench.region_cache import RegionCache
from rim_bench.segmenter import resolve_regions
from rim_bench.types import Prediction, ReferenceBank


# Bumped when the content of a cached region map or its features changes for the same config
# (2: equal-area overlapping masks go to the higher index; region maps from grid proposals).
REGION_CACHE_VERSION = 2


def register_builtin_stages() -> None:
    """Import the modules whose decorators fill the registries."""
    import rim_bench.features.clip_dense  # noqa: F401
    import rim_bench.features.dense  # noqa: F401
    import rim_bench.features.pooling  # noqa: F401
    import rim_bench.matching.baselines  # noqa: F401
    import rim_bench.matching.rim  # noqa: F401
    import rim_bench.proposals.grid  # noqa: F401
    import rim_bench.proposals.sam_automatic  # noqa: F401
    import rim_bench.proposals.superpixels  # noqa: F401
    import rim_bench.references.exemplars  # noqa: F401
    import rim_bench.segmenter  # noqa: F401


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
            raise ConfigError("the reference bank has non-finite features: delete its cache folder and rebuild it")
        self.bank = bank

    @torch.no_grad()
    def forward(self, image: Tensor, image_id: str | None = None) -> Prediction:
        """Segment a ``(3, H, W) uint8`` image; see `Prediction` for the shapes.

        With a region cache and an `image_id`, the regions and their features are read
        from (or written to) the cache.
        """
        if self.bank is None or self.segmenter is None:
            raise RuntimeError("set_bank() (and a segmenter for the vocabulary) must come before segmenting")
        cached = self.region_cache.get(image_id) if self.region_cache and image_id is not None else None
        if cached is None:
            region_map, regions = self.regions(image, image_id)
            if self.region_cache and image_id is not None:
                self.region_cache.put(image_id, region_map, regions)
        else:
            region_map, regions = cached
        device = next(self.featurizer.parameters()).device
        region_map, regions = region_map.to(device), regions.to(device)
        with self.timer("matching"):
            if self.bank.features.device != device:
                self.bank = self.bank.to(device)
            scores = self.matcher(regions, self.bank)
        with self.timer("painting"):
            label_map, region_labels = self.segmenter(region_map, scores)
        return Prediction(label_map=label_map, region_map=region_map, scores=scores, region_labels=region_labels)

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


def build_pipeline(cfg: DictConfig, class_names: list[str] | None, timer: StageTimer | None = None,
                   region_cache: RegionCache | None = None) -> SegmentationPipeline:
    """Build every stage that `cfg` names (the bank is set separately).

    `class_names` is the vocabulary the segmenter needs (which class is background); None
    leaves the segmenter to `build_segmenter` once the vocabulary is known. Without a
    `region_cache`, one keyed by the data set is made if ``cache_regions`` is on.
    """
    register_builtin_stages()
    # Cheap stages first, so a config mistake in them shows before model weights load.
    matcher = build_stage(MATCHERS, cfg.matcher, "matcher")
    segmenter = build_segmenter(cfg, class_names) if class_names is not None else None
    encoder = build_stage(ENCODERS, cfg.pooling, "pooling")
    proposer = build_stage(PROPOSERS, cfg.proposer, "proposer")
    featurizer = build_stage(FEATURIZERS, cfg.featurizer, "featurizer")
    if region_cache is None and cfg.cache_regions:
        region_cache = RegionCache(Path(cfg.cache_dir) / "regions" / region_cache_key(cfg))
    return SegmentationPipeline(proposer, featurizer, encoder, matcher, segmenter, timer, region_cache)


def build_segmenter(cfg: DictConfig, class_names: list[str]) -> Segmenter:
    """The segmenter for a vocabulary (its background rule needs the id of "background")."""
    background = class_names.index("background") if "background" in class_names else None
    return build_stage(SEGMENTERS, cfg.segmenter, "segmenter", background_id=background)


def region_cache_key(cfg: DictConfig, images: dict | None = None) -> str:
    """The hash of what the regions and their features depend on: the images, the test side and
    the precision (left out at full precision, so earlier caches stay valid).

    `images` names the images; by default the data set (name, root and split), whose image
    ids then name the files.
    """
    images = images or {"data": {k: cfg.data[k] for k in ("name", "root", "split")}}
    spec = {**images, **{k: key_spec(cfg[k], k) for k in ("proposer", "featurizer", "pooling")},
            "version": REGION_CACHE_VERSION}
    if str(cfg.trainer.precision) not in ("32-true", "32"):  # features differ in half precision
        spec["precision"] = str(cfg.trainer.precision)
    return config_hash(spec)
