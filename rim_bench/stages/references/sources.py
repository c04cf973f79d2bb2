"""From the config to a cached reference bank: one source, or several mixed.

`bank_for_config` is what `Assembly.bank` (every entry point's bank) calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import torch
from omegaconf import DictConfig

from rim_bench.core.cache_layout import CacheLayout
from rim_bench.core.params import PARTS
from rim_bench.core.protocols import DenseFeaturizer, ReferenceSource, RegionEncoder
from rim_bench.core.registry import REFERENCE_SOURCES, build_stage
from rim_bench.core.timing import StageTimer
from rim_bench.core.types import BuildContext, ReferenceBank
from rim_bench.stages.references.bank import cached_bank, concat_banks


@REFERENCE_SOURCES.register("mixed")
class MixedReferences(ReferenceSource):
    """Several sources' references in one bank (e.g. generated images plus user exemplars).

    Args:
        sources: the other reference sources (``references.<name>``), by name in the config; the
            registry builds each from its own block and passes the objects (`PARTS`).
    """

    def __init__(self, sources: Annotated[list, PARTS] = ["diffusion", "exemplars"]) -> None:  # noqa: B006
        self.sources: list[ReferenceSource] = sources
        self.uses_synonyms = any(s.uses_synonyms for s in sources)

    def cache_spec(self, class_names: list[str]) -> dict:
        return {"parts": [s.cache_spec(class_names) for s in self.sources]}

    def pending(self, layout: CacheLayout, classes: list[list[str]], device_type: str) -> dict[str, dict[str, int]]:
        """Each class's counts, summed over the sources."""
        total: dict[str, dict[str, int]] = {}
        for source in self.sources:
            for name, counts in source.pending(layout, classes, device_type).items():
                for what, n in counts.items():
                    total.setdefault(name, {}).setdefault(what, 0)
                    total[name][what] += n
        return total

    def probe(self, ctx: BuildContext, steps: int) -> int:
        return max((s.probe(replace(ctx, work_dir=ctx.work_dir / f"part{i}"), steps)
                    for i, s in enumerate(self.sources)), default=0)

    def build(self, ctx: BuildContext) -> ReferenceBank:
        return concat_banks([s.build(replace(ctx, work_dir=ctx.work_dir / f"part{i}")) for i, s in
                             enumerate(self.sources)])


def build_references(block: DictConfig) -> ReferenceSource:
    """The source that ``references.name`` selects (a composite one with its parts built)."""
    return build_stage(REFERENCE_SOURCES, block, "references")


def bank_for_config(
    cfg: DictConfig, featurizer: DenseFeaturizer, encoder: RegionEncoder, classes: list[list[str]],
    device: torch.device, timer: StageTimer, rank: int = 0, world_size: int = 1,
    barrier: Callable[[], None] = lambda: None, wait: bool = False,
) -> tuple[ReferenceBank, Path, bool]:
    """Load the bank that `cfg` describes from the cache, or build (a share of) it.

    The cache key is `CacheLayout.bank_key`. With `wait`, another process builds it and this one
    waits (see `cached_bank`).
    """
    layout = CacheLayout.of(cfg)
    source = build_references(cfg.references)

    def build(work_dir: Path) -> ReferenceBank:
        ctx = BuildContext(featurizer, encoder, classes, device, work_dir, rank, world_size, barrier, timer, layout)
        return source.build(ctx)

    return cached_bank(layout, layout.bank_key(source, classes), build, rank=rank, barrier=barrier, wait=wait)
