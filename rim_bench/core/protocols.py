"""The stage protocols. Any object with these call signatures can be registered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from rim_bench.core.types import BuildContext, ReferenceBank


class RegionProposer(Protocol):
    def __call__(self, image: Tensor) -> Tensor:
        """``(3, H, W) uint8`` image → ``(N, H, W) bool`` region masks (N may be 0), or, for
        disjoint regions, an ``(H, W) int64`` region map (ids 0..N-1, -1 = none) that needs no
        N full-size masks."""


class DenseFeaturizer(Protocol):
    feature_dim: int

    def __call__(self, image: Tensor) -> Tensor:
        """``(3, H, W) uint8`` image → ``(D, h, w) float32`` features on the image's grid."""

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The model's weights (an ``nn.Module``'s): the pipeline runs every stage on their device."""


class RegionEncoder(Protocol):
    def __call__(self, masks: Tensor, features: Tensor) -> Tensor:
        """``(N, H, W) bool`` masks (or an ``(H, W)`` region map) and ``(D, h, w)`` features →
        ``(N, D)`` region features."""


class ReferenceSource(Protocol):
    uses_synonyms: bool  # whether a class's synonyms change its references (else only its name is in the bank's key)

    def build(self, ctx: BuildContext) -> ReferenceBank:
        """Make the bank for ``ctx.classes`` with the test side's featurizer and encoder (see `BuildContext`)."""

    def cache_spec(self, class_names: list[str]) -> dict:
        """What identifies the bank's content beyond the config, for the cache key (files, phrases)."""


class Matcher(Protocol):
    def __call__(self, region_features: Tensor, bank: ReferenceBank) -> Tensor:
        """``(N, D)`` region features → ``(N, C)`` class scores, higher is better."""


@runtime_checkable
class ResolvesSettings(Protocol):
    """A stage with settings chosen at run time (``auto``), which metrics.json records under ``resolved``."""

    def resolved(self, bank: ReferenceBank) -> dict[str, float]:
        """Each such setting's value as run on `bank`, by its full config key; {} when none was left to the run."""


class Segmenter(Protocol):
    def __call__(self, region_map: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """``(H, W)`` region map (-1 = none), ``(N, C)`` scores → ``(N,)`` labels (255 = none) and
        the ``(H, W)`` region map they paint (`Prediction.label_map`), e.g. with uncovered pixels filled."""
