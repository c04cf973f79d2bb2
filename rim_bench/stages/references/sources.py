"""From the config to a cached reference bank: one source, or several mixed.

`bank_for_config` is what `Assembly.bank` (every entry point's bank) calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from rim_bench.core.config import key_spec, references_spec
from rim_bench.core.errors import ConfigError
from rim_bench.core.protocols import DenseFeaturizer, ReferenceSource, RegionEncoder
from rim_bench.core.registry import REFERENCE_SOURCES, build_stage
from rim_bench.core.timing import StageTimer
from rim_bench.core.types import BuildContext, ReferenceBank
from rim_bench.stages.references.bank import cached_bank, concat_banks


class MixedReferences:
    """Several sources' references in one bank (e.g. generated images plus user exemplars)."""

    def __init__(self, sources: list[ReferenceSource]) -> None:
        self.sources = sources
        self.uses_synonyms = any(s.uses_synonyms for s in sources)

    def cache_spec(self, class_names: list[str]) -> dict:
        return {"parts": [s.cache_spec(class_names) for s in self.sources]}

    def build(self, ctx: BuildContext) -> ReferenceBank:
        return concat_banks([s.build(replace(ctx, work_dir=ctx.work_dir / f"part{i}")) for i, s in
                             enumerate(self.sources)])


def build_references(block: DictConfig) -> tuple[ReferenceSource, dict]:
    """The source that ``references.name`` selects, and the config part of its cache key."""
    if block.name != "mixed":
        return build_stage(REFERENCE_SOURCES, block, "references"), references_spec(block)
    names = list(block.mixed.sources)
    if not names or "mixed" in names:
        raise ConfigError(f"references.mixed.sources: give two or more of {', '.join(REFERENCE_SOURCES.names())}")
    sources = [build_stage(REFERENCE_SOURCES, block, "references", name=n) for n in names]
    return MixedReferences(sources), references_spec(block)


def bank_key(cfg: DictConfig, source: ReferenceSource, spec: dict, classes: list[list[str]]) -> dict:
    """What a bank's cache folder is keyed by: the featurizer, the pooling, the reference source's
    config (`spec`) and content (files, subcategory phrases), and the vocabulary (with its synonyms
    where the source reads them: `rim-bench segment --classes a,b` then finds the bank `rim-bench test` built)."""
    class_names = [names[0] for names in classes]
    return {
        "featurizer": key_spec(cfg.featurizer, "featurizer"),
        "pooling": key_spec(cfg.pooling, "pooling"),
        "references": spec,
        "content": source.cache_spec(class_names),
        "classes": classes if source.uses_synonyms else class_names,
    }


def bank_for_config(
    cfg: DictConfig, featurizer: DenseFeaturizer, encoder: RegionEncoder, classes: list[list[str]],
    device: torch.device, timer: StageTimer, rank: int = 0, world_size: int = 1,
    barrier: Callable[[], None] = lambda: None, wait: bool = False,
) -> tuple[ReferenceBank, Path, bool]:
    """Load the bank that `cfg` describes from the cache, or build (a share of) it.

    The cache key is `bank_key`. With `wait`, another process builds it and this one waits
    (see `cached_bank`).
    """
    source, spec = build_references(cfg.references)
    key = bank_key(cfg, source, spec, classes)

    def build(work_dir: Path) -> ReferenceBank:
        ctx = BuildContext(featurizer, encoder, classes, device, work_dir, rank, world_size, barrier, timer,
                           store_root=Path(cfg.cache_dir).expanduser(),
                           feature_spec={k: key[k] for k in ("featurizer", "pooling")})
        return source.build(ctx)

    return cached_bank(Path(cfg.cache_dir), key, build, rank=rank, barrier=barrier, wait=wait)
