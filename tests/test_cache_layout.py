"""The one cache layout: every path under cache_dir, and keys that stay what they were.

The expected paths were computed by the code before `CacheLayout` (each caller deriving them
itself), for `cache_dir=/cache`: a change to any key fails here, since it would orphan every
user's cache.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rim_bench.core.cache_layout import CacheLayout, presentation_only
from rim_bench.core.config import load_config, resolve
from rim_bench.stages.matching.rim import normalizers_file
from rim_bench.stages.references.sources import build_references

VOCABULARY = [["background"], ["aeroplane", "airplane"], ["bicycle"]]
PACKAGE = Path(__file__).resolve().parent.parent / "rim_bench"


class FixedContent:
    """A reference source whose content is fixed (the smoke exemplars' files are not here)."""

    uses_synonyms = False

    def cache_spec(self, class_names: list[str]) -> dict:
        return {"files": "fixed"}


def layout(*overrides: str) -> CacheLayout:
    return CacheLayout.of(resolve(load_config([*overrides, "cache_dir=/cache"])))


# experiment and overrides -> (regions, bank of `FixedContent`), as the code before the layout made them
# (the regions at REGION_CACHE_VERSION 5)
PINNED = {
    ("experiment=smoke",): ("/cache/regions/75e30095f5a9", "/cache/banks/3c7b3e143873"),
    ("experiment=smoke", "references.name=mixed", "references.diffusion.subcategories=voc"):
        ("/cache/regions/75e30095f5a9", "/cache/banks/b871de8abe04"),
    ("experiment=rim_voc21",): ("/cache/regions/8337a76e18a9", "/cache/banks/0c51ecfc41ac"),
    ("experiment=rim_voc21", "trainer.precision=16-mixed", "references.diffusion.attn_threshold=0.3"):
        ("/cache/regions/ee2e0ba22db3", "/cache/banks/c78b98a9b416"),
}
# rim_voc21's generated references (its own source, the shipped VOC subcategories), likewise
PINNED_DIFFUSION = {
    ("experiment=rim_voc21",): ("/cache/banks/a6d26f887ca8", "/cache/references/f2ff7152b2b1"),
    ("experiment=rim_voc21", "trainer.precision=16-mixed", "references.diffusion.attn_threshold=0.3"):
        ("/cache/banks/bcb90ec23e4a", "/cache/references/48c1402e5b19"),
}
GENERATED = "/cache/generated/3943095e5578/aeroplane/4a070ee0874b8f9d.safetensors"


@pytest.mark.parametrize("overrides", list(PINNED), ids=" ".join)
def test_region_and_bank_paths_are_those_of_before(overrides):
    cache = layout(*overrides)
    regions, bank = PINNED[overrides]
    assert str(cache.regions_dir()) == regions
    assert str(cache.bank_dir(cache.bank_key(FixedContent(), VOCABULARY))) == bank


@pytest.mark.parametrize("overrides", list(PINNED_DIFFUSION), ids=" ".join)
def test_generated_reference_paths_are_those_of_before(overrides):
    cfg = resolve(load_config([*overrides, "cache_dir=/cache"]))
    cache, source = CacheLayout.of(cfg), build_references(cfg.references)
    bank, references = PINNED_DIFFUSION[overrides]
    assert str(cache.bank_dir(cache.bank_key(source, VOCABULARY))) == bank
    assert str(source._store_dir(cache)) == references
    assert str(source._generated_path(cache, "cuda", ["aeroplane", "airplane"], "jet")) == GENERATED


def test_the_other_stores_are_where_they_were():
    cache = layout("experiment=smoke")
    table = {"cat": ["cat", "tabby cat"], "dog": ["dog"]}
    assert str(cache.vocabulary_file(table)) == "/cache/vocabularies/c87f44233fafb339.yaml"
    assert str(normalizers_file(Path("/b"), 0.05)) == "/b/rim_normalizers_T0.05.safetensors"
    assert CacheLayout.of(resolve(load_config(["cache_dir=~/c"]))).root == Path("~/c").expanduser()


def test_presentation_only_settings_are_these():
    """The settings that no cache key reads (they only add pictures), as their stages declare them:
    listed here, so that adding one is a visible decision."""
    assert presentation_only() == {"references.diffusion.contact_sheets": True}


@pytest.mark.parametrize("name", ["diffusion", "mixed"])
def test_contact_sheets_do_not_change_the_bank(name):
    """Issue 23: turning the contact sheets off (or on) finds the same bank; a setting that
    changes the references does not."""
    base = ["experiment=rim_voc21", f"references.name={name}", "references.exemplars.root=/x"]

    def bank(*more: str) -> Path:
        cfg = resolve(load_config([*base, *more, "cache_dir=/cache"]))
        cache = CacheLayout.of(cfg)
        return cache.bank_dir(cache.bank_key(FixedContent(), VOCABULARY))

    assert bank("references.diffusion.contact_sheets=false") == bank()
    assert bank("references.diffusion.attn_threshold=0.3") != bank()


def test_no_module_but_the_layout_names_a_store_under_cache_dir():
    """Every path under cache_dir comes from `CacheLayout`: no other module joins a store's
    folder name onto a path, nor reads ``cache_dir`` (but config.py, below the layout, for the
    smoke set's default root, and assembly.py, which checks that cache_dir itself is writable)."""
    stores = {"regions", "banks", "references", "generated", "vocabularies"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cache_layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            joined = (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                      and isinstance(node.right, ast.Constant) and node.right.value in stores)
            if joined or (isinstance(node, ast.Attribute) and node.attr == "cache_dir"
                          and path.name not in ("config.py", "assembly.py")):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found
