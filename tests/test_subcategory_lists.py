"""The shipped subcategory lists: long enough for the subcategory sweep (1 to 10), well formed, and
keyed by each benchmark's class names in order."""

from __future__ import annotations

import re

import pytest
import yaml

from rim_bench.data.classes import read_classes
from rim_bench.stages.references.subcategory_lists import load_subcategories, subcategory_file

# subcategory list → the class files whose canonical names it must cover, in order.
LISTS = {"voc": ["voc21", "voc20"], "context": ["context60", "context59"], "coco_object": ["coco_object"]}
MIN_PHRASES = 16


@pytest.mark.parametrize("name", sorted(LISTS))
def test_every_class_has_at_least_16_distinct_phrases(name):
    table = yaml.safe_load(subcategory_file(name).read_text())
    for cls, phrases in table.items():
        assert len(phrases) >= MIN_PHRASES, (name, cls, len(phrases))
        assert len(set(phrases)) == len(phrases), (name, cls, [p for p in phrases if phrases.count(p) > 1])
        for phrase in phrases:
            assert re.fullmatch(r"[a-z0-9][a-z0-9 '\-]*", phrase), (name, cls, phrase)  # no "," or "/"


@pytest.mark.parametrize("name", sorted(LISTS))
def test_keys_are_the_benchmarks_classes_in_order(name):
    keys = list(yaml.safe_load(subcategory_file(name).read_text()))
    assert keys == [c[0] for c in read_classes(LISTS[name][0])]
    for classes in LISTS[name]:
        names = [c[0] for c in read_classes(classes)]
        chosen = load_subcategories(name, names, MIN_PHRASES)
        assert all(len(chosen[n]) == MIN_PHRASES for n in names)
