"""Every path under ``cache_dir`` and the key of each store: one layout, made from the config.

    <cache_dir>/regions/<key>/               each image's regions and region features
                                             (`rim_bench.run.region_cache`), by image content
    <cache_dir>/banks/<key>/                 reference banks (`rim_bench.stages.references.bank`), where
                                             a matcher may keep what it derives from one (RIM's normalizers)
    <cache_dir>/references/<key>/            generated references, one shard per (class, subcategory)
    <cache_dir>/generated/<key>/             the images and attention maps they come from
    <cache_dir>/vocabularies/<hash>.yaml     the API's subcategory tables, named by content
    <cache_dir>/text/text-<key>.safetensors  a per-pixel method's query-name embeddings, keyed by the
                                             model's file, the templates and the names (`rim_bench.stages.pixel.text`)
    <cache_dir>/smoke/                       the smoke set's default root: ``experiment/smoke.yaml``
                                             sets it, `rim_bench.core.config` knows it (below this module)

A key hashes what changes what its store holds, and nothing else: the stages' settings as
`key_spec` gives them, with the parameters their stages declare presentation-only
(``Annotated[..., PRESENTATION]``: they only add pictures) at their defaults. Keys never change
silently: users' caches stay valid across versions (tests/test_cache_layout.py pins them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from rim_bench.core.config import composed_spec, config_hash, key_spec
from rim_bench.core.registry import declarations

if TYPE_CHECKING:
    from rim_bench.core.protocols import ReferenceSource

# Bumped when the content of a cached region map or its features changes for the same config
# (2: equal-area overlapping masks go to the higher index; region maps from grid proposals;
# 3: entries named by image content, shared by every entry point; 4: entries carry a checksum,
# so that a cache from before is left alone rather than set aside one warning per image;
# 5: entries record the settings key and image they were made for, likewise).
REGION_CACHE_VERSION = 5
_TEST_SIDE = ("proposer", "featurizer", "pooling")
_FULL_PRECISION = ("32-true", "32", "None")  # None: trainer.precision unset, 32-true for the region path


@dataclass(frozen=True)
class CacheLayout:
    """Where one config's caches live (`of`), or the stores under a bare `root` (no settings:
    a scratch folder, tests).

    Attributes:
        root: ``cache_dir``, expanded.
        specs: the keyed settings: ``proposer``, ``featurizer``, ``pooling`` (`key_spec`) and
            ``references`` (`composed_spec`, presentation-only settings pinned).
        precision: the Trainer's precision (half precision changes features).
    """

    root: Path
    specs: dict[str, Any] = field(default_factory=dict)
    precision: str = "32-true"

    @classmethod
    def of(cls, cfg: DictConfig) -> CacheLayout:
        specs = {key: key_spec(cfg[key], key) for key in _TEST_SIDE}
        specs["references"] = _pinned(composed_spec(cfg.references, "references"), "references")
        return cls(Path(str(cfg.cache_dir)).expanduser(), specs, str(cfg.trainer.precision))

    # Regions -------------------------------------------------------------------------------------

    def regions_key(self) -> str:
        """The hash of what regions and their features depend on besides the image: the test
        side and the precision (left out at full precision)."""
        spec = {**{key: self.specs[key] for key in _TEST_SIDE}, "version": REGION_CACHE_VERSION}
        if self.precision not in _FULL_PRECISION:
            spec["precision"] = self.precision
        return config_hash(spec)

    def regions_dir(self) -> Path:
        return self.root / "regions" / self.regions_key()

    def text_dir(self) -> Path:
        """Query-name text embeddings (each file's name is its own key: model, templates, names)."""
        return self.root / "text"

    # Banks and what outlives one bank ------------------------------------------------------------

    @property
    def feature_spec(self) -> dict[str, Any]:
        """The featurizer and pooling settings: part of the key of every stored feature."""
        return {key: self.specs[key] for key in ("featurizer", "pooling") if key in self.specs}

    def bank_key(self, source: ReferenceSource, classes: list[list[str]]) -> dict[str, Any]:
        """What a bank is keyed by: the featurizer, the pooling, the reference source's settings and
        content (files, subcategory phrases), and the vocabulary (with its synonyms where the source
        reads them: `rim-bench segment --classes a,b` then finds the bank `rim-bench test` built)."""
        class_names = [names[0] for names in classes]
        return {
            **self.feature_spec,
            "references": self.specs["references"],
            "content": source.cache_spec(class_names),
            "classes": classes if source.uses_synonyms else class_names,
        }

    def bank_dir(self, key: dict[str, Any]) -> Path:
        """A bank's folder, for its `bank_key` (any JSON-able key)."""
        return self.root / "banks" / config_hash(key)

    def references_dir(self, generation: dict[str, Any]) -> Path:
        """The shards of generated references made with a generator's `generation` settings
        (all that makes a reference but which subcategories a bank takes) and this featurizer."""
        return self.root / "references" / config_hash({**self.feature_spec, "generation": generation})

    def generated_dir(self, generation: dict[str, Any], device_type: str) -> Path:
        """The images and attention maps of a generator's `generation` settings; `device_type` is
        part of the key since CUDA generates in fp16 and the CPU in fp32."""
        return self.root / "generated" / config_hash({**generation, "device": device_type})

    # Other stores --------------------------------------------------------------------------------

    def vocabulary_file(self, table: dict[str, list[str]]) -> Path:
        """A subcategory table's file, named by its content."""
        return self.root / "vocabularies" / f"{config_hash(table, 16)}.yaml"


def presentation_only() -> dict[str, Any]:
    """Every stage setting that changes only what a run shows (pictures), never what a store holds, by
    config key, with its default: every key records it at that value, whatever it is set to, so that
    changing one reuses the caches (declared ``Annotated[..., PRESENTATION]`` by its stage)."""
    return {key: param.default for key, param in declarations().items() if param.presentation}


def _pinned(spec: dict[str, Any], block: str) -> dict[str, Any]:
    """`spec` (a stage's, or ``mixed``'s with its ``parts``) with its presentation-only settings at
    their defaults (`presentation_only`)."""
    if "parts" in spec:
        return {**spec, "parts": [_pinned(part, block) for part in spec["parts"]]}
    prefix, pinned = f"{block}.{spec['name']}.", presentation_only()
    return {k: pinned.get(prefix + k, v) for k, v in spec.items()}
