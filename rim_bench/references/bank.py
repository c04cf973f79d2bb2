"""Saving, loading and caching reference banks (safetensors + JSON).

A bank is cached under ``<cache_dir>/banks/<key>/`` where the key hashes everything
that changes its content: the featurizer, the pooling, the reference source's config
and files, and the vocabulary. The folder is written beside its final place and renamed
into it, so a reader never sees a partial bank.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from rim_bench.config import config_hash
from rim_bench.types import ReferenceBank

TENSORS = "bank.safetensors"
METADATA = "bank.json"


def save_bank(bank: ReferenceBank, directory: Path) -> None:
    """Write `bank` into `directory` (which must not exist yet), atomically."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_file(
            {"features": bank.features.contiguous(), "class_ids": bank.class_ids, "subcategory_ids": bank.subcategory_ids},
            str(tmp / TENSORS),
        )
        (tmp / METADATA).write_text(json.dumps(
            {"class_names": bank.class_names, "subcategory_names": bank.subcategory_names, "meta": bank.meta}, indent=1
        ))
        os.replace(tmp, directory)
    except OSError:
        if directory.is_dir():  # another process finished the same bank first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_bank(directory: Path) -> ReferenceBank:
    tensors = load_file(str(directory / TENSORS))
    info = json.loads((directory / METADATA).read_text())
    return ReferenceBank(
        features=tensors["features"], class_ids=tensors["class_ids"], subcategory_ids=tensors["subcategory_ids"],
        class_names=info["class_names"], subcategory_names=info["subcategory_names"], meta=info["meta"],
    )


def cached_bank(cache_dir: Path, key_spec: dict, build: Callable[[], ReferenceBank]) -> tuple[ReferenceBank, Path, bool]:
    """Load the bank for `key_spec` from the cache, or build and store it.

    Returns:
        The bank, its cache folder, and whether it was a cache hit.
    """
    directory = Path(cache_dir).expanduser() / "banks" / config_hash(key_spec)
    if (directory / METADATA).is_file():
        return load_bank(directory), directory, True
    bank = build()
    save_bank(bank, directory)
    return bank, directory, False


def bank_summary(bank: ReferenceBank) -> str:
    """One line: references and subcategories per class."""
    counts = torch.bincount(bank.class_ids, minlength=bank.num_classes).tolist()
    return ", ".join(f"{name} {n}" for name, n in zip(bank.class_names, counts))
