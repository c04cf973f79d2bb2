"""The per-image RIM pipeline: regions → dense features → region features → scores → label map.

`SegmentationPipeline` is the one implementation every entry point uses (the test
LightningModule now; the Python API and `rim-bench segment` later).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from rim_bench.protocols import DenseFeaturizer, Matcher, RegionEncoder, RegionProposer, Segmenter
from rim_bench.registry import ENCODERS, FEATURIZERS, MATCHERS, PROPOSERS, SEGMENTERS, build_stage
from rim_bench.timing import StageTimer
from rim_bench.types import Prediction, ReferenceBank


def register_builtin_stages() -> None:
    """Import the modules whose decorators fill the registries."""
    import rim_bench.features.dense  # noqa: F401
    import rim_bench.features.pooling  # noqa: F401
    import rim_bench.matching.baselines  # noqa: F401
    import rim_bench.matching.rim  # noqa: F401
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
        matcher: Matcher, segmenter: Segmenter, timer: StageTimer | None = None,
    ) -> None:
        super().__init__()
        self.proposer = proposer
        self.featurizer = featurizer
        self.encoder = encoder
        self.matcher = matcher
        self.segmenter = segmenter
        self.timer = timer or StageTimer()
        self.bank: ReferenceBank | None = None

    def set_bank(self, bank: ReferenceBank) -> None:
        if bank.features.shape[1] != self.featurizer.feature_dim:
            raise ValueError(
                f"the bank's features have {bank.features.shape[1]} dims but the featurizer gives "
                f"{self.featurizer.feature_dim}: rebuild the bank with this featurizer"
            )
        self.bank = bank

    @torch.no_grad()
    def forward(self, image: Tensor) -> Prediction:
        """Segment a ``(3, H, W) uint8`` image; see `Prediction` for the shapes."""
        if self.bank is None:
            raise RuntimeError("set_bank() must be called before segmenting")
        device = next(self.featurizer.parameters()).device
        with self.timer("proposals"):
            masks = self.proposer(image).to(device)
            masks = masks[masks.flatten(1).any(1)]  # an empty proposal has no feature
        with self.timer("features"):
            dense = self.featurizer(image.to(device))
        with self.timer("pooling"):
            regions = self.encoder(masks, dense)
        with self.timer("matching"):
            bank = self.bank if self.bank.features.device == device else self.bank.to(device)
            self.bank = bank
            scores = self.matcher(regions, bank)
        with self.timer("painting"):
            label_map, region_labels = self.segmenter(masks, scores)
        return Prediction(label_map=label_map, masks=masks, scores=scores, region_labels=region_labels)


def build_pipeline(cfg: DictConfig, timer: StageTimer | None = None) -> SegmentationPipeline:
    """Build every stage that `cfg` names (the bank is set separately)."""
    register_builtin_stages()
    # Cheap stages first, so a config mistake in them shows before model weights load.
    matcher = build_stage(MATCHERS, cfg.matcher, "matcher")
    segmenter = build_stage(SEGMENTERS, cfg.segmenter, "segmenter")
    encoder = build_stage(ENCODERS, cfg.pooling, "pooling")
    proposer = build_stage(PROPOSERS, cfg.proposer, "proposer")
    featurizer = build_stage(FEATURIZERS, cfg.featurizer, "featurizer")
    return SegmentationPipeline(proposer, featurizer, encoder, matcher, segmenter, timer)
