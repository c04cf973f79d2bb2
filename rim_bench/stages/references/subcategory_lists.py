"""Subcategory lists: per class, the phrases that reference images are generated from.

Shipped lists are YAML files in ``rim_bench/stages/references/subcategories/`` (``voc``,
``context``, ``coco_object``); a path to a YAML file of the same format works too:
a mapping from class name to a list whose first entry is the class itself.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from rim_bench.core.errors import DataError
from rim_bench.core.io import shipped_or_path


def subcategory_file(name_or_path: str) -> Path:
    return shipped_or_path("rim_bench.stages.references", "subcategories", ".yaml", name_or_path, "subcategory list")


def load_subcategories(name_or_path: str, class_names: list[str], count: int | None) -> dict[str, list[str]]:
    """The first `count` subcategories (all if None) of each class in `class_names`.

    Raises:
        DataError: the vocabulary is empty, or a class is missing from the list or has none.
    """
    if not class_names:
        raise DataError("the vocabulary is empty: a reference bank needs at least one class")
    path = subcategory_file(name_or_path)
    try:
        table = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected a mapping 'class: [class, subcategory, ...]'")
    chosen = {}
    for name in class_names:
        subs = table.get(name)
        if not subs or not isinstance(subs, list) or not all(isinstance(s, str) and s.strip() for s in subs):
            raise DataError(
                f"{path}: class '{name}' has no subcategory list; add '{name}: [{name}, ...]' "
                "or point references.diffusion.subcategories to a file that has it"
            )
        chosen[name] = [s.strip() for s in subs[:count]]
    return chosen
