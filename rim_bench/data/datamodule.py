"""The Lightning datamodule for test-only runs, with a sampler that never pads.

Lightning's default for multi-process testing is a `DistributedSampler`, which pads the
last shard with duplicates so that every rank gets as many samples; duplicates would be
scored twice. `ShardSampler` gives rank r the samples r, r + W, r + 2W, ...: every sample
exactly once, shards differing in length by at most one.
"""

from __future__ import annotations

from typing import Iterator

import lightning as L
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from rim_bench.data.base import BenchmarkDataset
from rim_bench.data.classes import read_classes
from rim_bench.errors import ConfigError
from rim_bench.registry import DATASETS
from rim_bench.types import Sample


def _benchmark(data: DictConfig) -> type[BenchmarkDataset]:
    import rim_bench.data.ade  # noqa: F401 - each module registers its benchmarks
    import rim_bench.data.cityscapes  # noqa: F401
    import rim_bench.data.coco  # noqa: F401
    import rim_bench.data.context  # noqa: F401
    import rim_bench.data.voc  # noqa: F401

    return DATASETS.get(data.name, "data")


def class_list(data: DictConfig) -> list[list[str]]:
    """The benchmark's classes with synonyms: ``data.classes``, else the benchmark's own file."""
    class_file = data.classes or _benchmark(data).default_classes
    if class_file is None:
        raise ConfigError(f"data.classes: data set '{data.name}' needs a class file (a path, one class a line)")
    return read_classes(class_file)


def build_dataset(data: DictConfig) -> tuple[BenchmarkDataset, list[list[str]]]:
    """The data set that ``data.name`` selects, and its classes (with synonyms).

    Runs the cheap layout checks, so that a wrong path fails before any model loads.
    """
    classes = class_list(data)
    if data.root is None:
        raise ConfigError(f"data.root: not set; give data.root=PATH for '{data.name}' (see datasets/README.md)")
    dataset = _benchmark(data)(data.root, data.split, data.max_images, num_classes=len(classes),
                               skip_bad=data.get("skip_bad", False))
    return dataset, classes


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a data set of `length` samples, in order."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.length = length
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def collate_samples(batch: list[Sample]) -> list[Sample]:
    """Keep samples as a list: images differ in size and are processed one by one."""
    return batch


class SegmentationDataModule(L.LightningDataModule):
    """Serves one test split, sharded across processes without duplicates.

    The Trainer must be built with ``use_distributed_sampler=False`` so that Lightning
    keeps our sampler.

    Args:
        dataset: the test set.
        batch_size: samples per `test_step`.
        num_workers: DataLoader worker processes.
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, num_workers: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers

    def test_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=ShardSampler(len(self.dataset), rank, world),
            num_workers=self.num_workers, collate_fn=collate_samples,
        )
