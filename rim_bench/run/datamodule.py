"""Lightning datamodules for test-only runs, with a sampler that never pads.

Lightning's default for multi-process testing is a `DistributedSampler`, which pads the
last shard with duplicates so that every rank gets as many samples; duplicates would be
scored twice. `ShardSampler` gives rank r the samples r, r + W, r + 2W, ...: every sample
exactly once, shards differing in length by at most one. It is a `DistributedSampler`, so
Lightning keeps it whatever the Trainer's ``use_distributed_sampler``.

`BenchmarkDataModule("voc21", root="DATA")` opens a benchmark by name (the `DATASETS`
registry); `ImageFolderDataModule` serves your own images for ``predict``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from rim_bench.core.config import load_config, resolve, to_dict
from rim_bench.core.errors import ConfigError
from rim_bench.core.types import Sample
from rim_bench.data.base import BenchmarkDataset, load_rgb  # load_rgb: a DataError naming the file if it cannot be read
from rim_bench.data.classes import parse_vocabulary
from rim_bench.data.images import find_images, output_names
from rim_bench.run.datasets import build_dataset, class_list


class ShardSampler(DistributedSampler):
    """Indices ``rank, rank + world_size, ...`` of a data set of `length` samples, in order.

    A `DistributedSampler` by type only (no padding, no shuffling), so that Lightning does not
    replace it.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        Sampler.__init__(self)
        self.length = length
        self.rank = rank
        self.num_replicas = self.world_size = world_size
        self.shuffle, self.drop_last, self.seed, self.epoch = False, False, 0, 0
        self.num_samples = len(range(rank, length, world_size))
        self.total_size = length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return self.num_samples


def collate_samples(batch: list[Sample]) -> list[Sample]:
    """Keep samples as a list: images differ in size and are processed one by one."""
    return batch


class SegmentationDataModule(L.LightningDataModule):
    """Serves one data set for test, validate and predict, sharded across processes without duplicates.

    Args:
        dataset: the images (`Sample`s); None until `setup` opens it (subclasses).
        batch_size: samples per step.
        num_workers: DataLoader worker processes.
    Attributes:
        classes: the vocabulary ``[[name, synonym, ...], ...]`` the model builds its bank for
            (None: the model's config says).
    """

    classes: list[list[str]] | None = None

    def __init__(self, dataset: Dataset | None = None, batch_size: int = 1, num_workers: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers

    def setup(self, stage: str | None = None) -> None:
        self.check_world_size(self.trainer.world_size if self.trainer else 1)

    def check_world_size(self, world: int) -> None:
        """Every process needs an image: a one-line error if there are more processes than images."""
        if self.dataset is None:
            return
        images = len(self.dataset)  # type: ignore[arg-type]  # torch's Dataset stub declares no __len__
        if world > images:
            raise ConfigError(f"trainer: {world} processes for {images} images; use at most "
                              f"{images} (trainer.devices x trainer.num_nodes)")

    def test_dataloader(self) -> DataLoader:
        if self.dataset is None:
            self.setup("test")
        assert self.dataset is not None  # `setup` opens it
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        images = len(self.dataset)  # type: ignore[arg-type]  # torch's Dataset stub declares no __len__
        return DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=ShardSampler(images, rank, world),
            num_workers=self.num_workers, collate_fn=collate_samples,
        )

    val_dataloader = predict_dataloader = test_dataloader


class BenchmarkDataModule(SegmentationDataModule):
    """One benchmark's split, opened by name.

    Args:
        name: a benchmark (``voc21``, ``context59``, ``smoke``, ...; see configs/default.yaml ``data.name``).
        root: the folder holding the benchmark's folder (or that folder); for ``smoke``, null is
            its folder in the cache (generated on first use). A root that does not exist is an error.
        split: the split file's name.
        classes: a class file (shipped name or path); null is the benchmark's own.
        max_images: the first N images only.
        batch_size, num_workers: as for the DataLoader.
        skip_bad: leave out images whose files are damaged (each is reported) instead of stopping.
        generate: ``smoke`` only: generate the set at `root` if it is missing (always at the default root).
    """

    dataset: BenchmarkDataset | None

    def __init__(self, name: str = "smoke", root: str | None = None, split: str = "val", classes: str | None = None,
                 max_images: int | None = None, batch_size: int = 1, num_workers: int = 0,
                 skip_bad: bool = False, generate: bool = False) -> None:
        super().__init__(None, batch_size, num_workers)
        if root is None and name == "smoke":
            root, generate = resolve(load_config(["experiment=smoke"])).data.root, True
        self.data = OmegaConf.create({"name": name, "root": None if root is None else str(root), "split": split,
                                      "classes": classes, "max_images": max_images,
                                      "batch_size": batch_size, "num_workers": num_workers, "skip_bad": skip_bad,
                                      "generate": generate})
        self.classes = class_list(self.data)  # cheap: a fixed vocabulary file; a bad name fails here

    @classmethod
    def from_config(cls, data: DictConfig) -> BenchmarkDataModule:
        """From a config's ``data`` block."""
        return cls(data.name, data.root, data.split, data.classes, data.max_images, data.batch_size, data.num_workers,
                   data.get("skip_bad", False), data.get("generate", False))

    def data_config(self) -> dict[str, Any]:
        """The ``data`` block this module serves, for the model's saved config."""
        return to_dict(self.data, resolve=False)

    def setup(self, stage: str | None = None) -> None:
        # The layout checks, so that a wrong path fails before any model loads.
        if self.dataset is None:
            self.dataset, _ = build_dataset(self.data)
        super().setup(stage)


class ExperimentDataModule(SegmentationDataModule):
    """The benchmark that the model's own config names (its ``data`` block): the data for a
    Trainer given a `RIMModule` alone, e.g. ``rim-bench-lightning test --model.experiment voc21``.
    Opened in `setup`, which Lightning calls before the module's, so the module builds its bank
    for this data set's vocabulary."""

    def __init__(self) -> None:
        super().__init__(None)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            cfg = getattr(self.trainer.lightning_module, "cfg", None) if self.trainer else None
            if not isinstance(cfg, DictConfig):
                raise ConfigError("ExperimentDataModule: give it to a Trainer together with a RIMModule")
            data = cfg.data
            self.dataset, self.classes = build_dataset(data)
            self.batch_size, self.num_workers = int(data.batch_size), int(data.num_workers)
        super().setup(stage)


class ImageFolderDataModule(SegmentationDataModule):
    """Your own images with your class names, for ``predict`` (label maps, no scores).

    Args:
        images: files, folders and glob patterns (as `rim-bench segment` takes them).
        classes: comma-separated class names, label id order (``"cat,dog,sofa"``).
    """

    def __init__(self, images: list[str], classes: str, batch_size: int = 1, num_workers: int = 0) -> None:
        paths = find_images(list(images))
        super().__init__(ImageFiles(paths, output_names(paths)), batch_size, num_workers)
        self.classes = parse_vocabulary(classes.split(",") if classes.strip() else [])


class ImageFiles(Dataset):
    """Images without labels: `Sample`s whose label is empty and whose id is a file-safe name."""

    def __init__(self, paths: list[Path], names: list[str]) -> None:
        self.paths, self.names = paths, names

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        return Sample(load_rgb(self.paths[index]), torch.zeros(0, 0, dtype=torch.uint8), self.names[index])
