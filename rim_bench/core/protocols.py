"""The stage protocols and the method protocol. Any object with these call signatures can be registered.

Imports no torch (the types are for the checkers): `rim_bench.run.methods` reads `Work` while a config is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rim_bench.core.params import Weights

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from rim_bench.core.cache_layout import CacheLayout
    from rim_bench.core.timing import StageTimer
    from rim_bench.core.types import BuildContext, Prediction, ReferenceBank


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
    """Makes a reference bank. A source that generates images says what it will generate and what that
    costs (`pending`, `probe`, for `rim-bench plan`); one that subclasses this protocol and generates
    nothing inherits the answers "nothing"."""

    uses_synonyms: bool  # whether a class's synonyms change its references (else only its name is in the bank's key)

    def build(self, ctx: BuildContext) -> ReferenceBank:
        """Make the bank for ``ctx.classes`` with the test side's featurizer and encoder (see `BuildContext`)."""

    def cache_spec(self, class_names: list[str]) -> dict:
        """What identifies the bank's content beyond the config, for the cache key (files, phrases)."""

    def pending(self, layout: CacheLayout, classes: list[list[str]], device_type: str) -> dict[str, dict[str, int]]:
        """Per class, what a build would still generate: ``subcategories``, ``shards`` to make, ``images``."""
        return {}

    def probe(self, ctx: BuildContext, steps: int) -> int:
        """Make one reference end to end from an image generated in `steps` denoising steps, timed by
        ``ctx.timer`` (``ctx`` in a scratch folder); returns the further steps a real image takes, each
        costing a ``"unet step"`` as timed. Nothing to do for a source that generates nothing."""
        return 0


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


class PixelLabeler(Protocol):
    """A per-pixel method's stage (``pixel.name``: a peer such as SCLIP), registered in `PIXEL_METHODS`.
    Its constructor takes its declared parameters and, given by the code, ``text_dir`` (where it may cache
    text embeddings) and ``precision`` (``trainer.precision``; None: its own)."""

    @property
    def module(self) -> nn.Module:
        """The weights, moved to the run's device."""

    def for_vocabulary(self, vocabulary: list[list[str]]) -> Callable[[Tensor], Tensor]:
        """The labeller of `vocabulary` (``[[name, synonym, ...], ...]``; label id i = its i-th class):
        ``(3, H, W) uint8`` image → ``(H, W) int64`` class ids (255 = none)."""


class Method(Protocol):
    """What turns a test image into a `Prediction`: one seam for RIM's region pipeline and the peers'
    per-pixel methods (`rim_bench.run.methods`), so that no command branches on which it is.
    Making one loads nothing; `load` loads the models, `set_vocabulary` builds a bank or text embeddings."""

    blocks: tuple[str, ...]  # the config blocks it reads: what its result hash covers

    def weights(self) -> list[Weights]:
        """What its stages load from disk or the hub, to check before anything loads."""

    def describe(self) -> dict[str, str]:
        """How a result of it was decided, for tables: ``{"background": ..., "own_settings": ...}``."""

    def load(self, device: torch.device) -> nn.Module:
        """Load the models on `device`; the module holding them (it follows a LightningModule's device)."""

    def set_vocabulary(self, classes: list[list[str]], device: torch.device, rank: int = 0, wait: bool = False,
                       subcategories: dict[str, list[str]] | None = None) -> ReferenceBank | None:
        """Embed or reference `classes`: a region method's bank (returned), a pixel method's text embeddings.
        `rank` / `wait`: ranks above 0 wait for rank 0 to publish a shared cache entry. `subcategories`:
        the API's phrases per class for generated references (None: the configured ones)."""

    def __call__(self, image: Tensor, image_id: str | None = None) -> Prediction:
        """Segment a ``(3, H, W) uint8`` image (`image_id` names it in errors)."""

    def summary(self) -> str:
        """One line on the vocabulary as set (the bank, or the text embeddings), for the log."""

    def record(self) -> dict[str, Any]:
        """What metrics.json records of it beside the scores: ``bank`` (None without one) and ``resolved``,
        the settings chosen at run time (``auto``) by config key."""

    def count_work(self, dataset: Any, classes: list[list[str]], device: torch.device) -> Work:
        """`rim-bench plan`: what a run over `dataset` still has to compute (caches consulted, nothing loaded)."""

    def measure(self, dataset: Any, classes: list[list[str]], device: torch.device, timer: StageTimer,
                work: Work) -> None:
        """`rim-bench plan`: run each stage once on real inputs, timed by `timer` (caches left as they were)."""


@dataclass
class Work:
    """What a run still has to do, for `rim-bench plan`: each timed stage's item count, and lines to print."""

    items: dict[str, int]  # stage → items to process (a stage not named: once)
    lines: list[str] = field(default_factory=list)
    extra_unet_steps: int = 0  # generation: steps a generated image takes beyond the dry run's
