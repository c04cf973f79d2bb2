"""A benchmark's data set and classes from a config's ``data`` block, without Lightning: `rim-bench
segment`, the API, `plan` and `check-data` open data sets through here; the data modules
(`rim_bench.run.datamodule`) too."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.registry import DATASETS
from rim_bench.data.base import BenchmarkDataset
from rim_bench.data.classes import read_classes
from rim_bench.run.assembly import prepare

log = logging.getLogger(__name__)


def class_list(data: DictConfig) -> list[list[str]]:
    """The benchmark's classes with synonyms: ``data.classes``, else the benchmark's own file."""
    class_file = data.classes or DATASETS.get(data.name, "data").default_classes
    if class_file is None:
        raise ConfigError(f"data.classes: data set '{data.name}' needs a class file (a path, one class a line)")
    return read_classes(class_file)


def build_dataset(data: DictConfig) -> tuple[BenchmarkDataset, list[list[str]]]:
    """The data set that ``data.name`` selects, and its classes (with synonyms).

    Runs the cheap layout checks, so that a wrong path fails before any model loads. A
    missing root is an error, but for the smoke set with ``data.generate`` (set at its default
    root): it is generated there.
    """
    classes = class_list(data)
    if data.root is None:
        raise ConfigError(f"data.root: not set; give data.root=PATH for '{data.name}' (see datasets/README.md)")
    if data.get("generate"):
        generate_missing(data.name, Path(str(data.root)).expanduser())
    dataset = DATASETS.get(data.name, "data")(data.root, data.split, data.max_images, num_classes=len(classes),
                                              skip_bad=data.get("skip_bad", False))
    return dataset, classes


def generate_missing(name: str, root: Path) -> None:
    """Generate the smoke set at `root` unless it exists (`data.generate=true`)."""
    from rim_bench.data.smoke import generate_smoke

    if name != "smoke":
        raise ConfigError(f"data.generate: only the smoke set is generated, not '{name}'; set data.generate=false")
    if not root.exists():
        generate_smoke(root)


def check_data(cfg: DictConfig, max_listed: int = 50) -> int:
    """Read every sample of the configured data set and print its problems (the first
    `max_listed`, then their count); a `DataError` if there is any."""
    cfg = prepare(cfg)
    data = OmegaConf.merge(cfg.data, {"skip_bad": True})  # list every problem instead of stopping at the first
    dataset, classes = build_dataset(data)  # type: ignore[arg-type]
    problems = list(dataset.check_all())
    for message in problems[:max_listed]:
        log.info(message)
    if len(problems) > max_listed:
        log.info(f"... and {len(problems) - max_listed} more problems")
    total = len(dataset) + len(dataset.problems)
    warnings = list(dataset.size_warnings())
    for message in warnings[:max_listed]:
        log.info(f"warning: {message}")
    # The counts name what they count: "21 classes" next to "have problems" read as 21 classes with problems.
    extreme = f"{len(warnings)} of them of extreme size or shape, warned about above" if warnings else ""
    if problems:
        raise DataError(f"{len(problems)} of {total} images in {dataset.dir} have problems (listed above"
                        f"{'; ' + extreme if extreme else ''}); the data set has {len(classes)} classes")
    log.info(f"ok: {total} images in {dataset.dir}, {len(classes)} classes" + (f" ({extreme})" if extreme else ""))
    return 0
