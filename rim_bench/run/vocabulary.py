"""A vocabulary's own subcategory phrases for generated references (the API's ``set_vocabulary(subcategories=)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from rim_bench.core.cache_layout import CacheLayout
from rim_bench.core.config import variant_names
from rim_bench.core.errors import ConfigError
from rim_bench.core.io import atomic_write_text
from rim_bench.core.registry import REFERENCE_SOURCES
from rim_bench.stages.references.subcategory_lists import subcategory_file

# Phrases for a class without subcategories of its own: views and settings of the class
# itself (ours), so every prompt names the class. Real subcategories ("tabby cat",
# "sphynx") are better; pass them to `set_vocabulary` when you have them.
VIEW_PHRASES = ("{}", "close-up {}", "small {}", "large {}", "{} outdoors", "{} indoors", "{} from above",
                "{} from the side", "old {}", "colorful {}")


def phrase_keys(cfg: DictConfig) -> list[str]:
    """The reference sources of `cfg` (a composite source's parts) that take subcategory phrases: those
    that declare a ``subcategories`` parameter, as generated references do."""
    return [n for n in variant_names(cfg.references, "references")
            if "subcategories" in REFERENCE_SOURCES.params(n, "references")]


def with_subcategories(cfg: DictConfig, vocabulary: list[list[str]], given: dict[str, list[str]] | None) -> DictConfig:
    """`cfg` with this vocabulary's subcategory table (a file named by its content) for each source that
    takes phrases (the API's route: classes the configured list lacks get `VIEW_PHRASES`); `cfg` itself
    when `given` is None (a benchmark's run: the configured list as it is) or no source takes phrases."""
    if given is None:
        return cfg
    sources = phrase_keys(cfg)
    if not sources:
        if given:
            raise ConfigError("subcategories= needs generated references (references.name=diffusion or mixed)")
        return cfg
    cfg = cfg.copy()
    OmegaConf.set_readonly(cfg, False)  # this vocabulary's own reference settings, on a copy
    for name in sources:
        configured = cfg.references[name].subcategories
        table = subcategory_table([line[0] for line in vocabulary], given, configured)
        cfg.references[name].subcategories = str(_table_file(cfg, table))
    return cfg


def _table_file(cfg: DictConfig, table: dict[str, list[str]]) -> Path:
    """Write the table (a YAML file named by its content), every time: a copy left from before,
    perhaps altered, is never read."""
    path = CacheLayout.of(cfg).vocabulary_file(table)
    atomic_write_text(path, yaml.safe_dump(table, allow_unicode=True, sort_keys=False))  # atomic: concurrent writers
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
