"""The Lightning datamodule for test-only runs, and the dataset builders by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from rim_bench.data.voc_layout import VOCLayoutDataset
from rim_bench.errors import DataError
from rim_bench.registry import DATASETS
from rim_bench.types import Sample


@DATASETS.register("voc_layout")
def voc_layout(root: str, split: str, max_images: int | None) -> Dataset:
    """Any data set already on disk in the VOC layout."""
    return VOCLayoutDataset(root, split, max_images)


@DATASETS.register("smoke")
def smoke(root: str, split: str, max_images: int | None) -> Dataset:
    """The embedded synthetic benchmark, generated under `root` on first use."""
    from rim_bench.data.smoke import generate_smoke

    path = Path(root).expanduser()
    marker = path / "DONE"
    if path.exists() and not marker.is_file():
        raise DataError(f"'{path}' exists but is not a smoke benchmark (no DONE file): delete it or set data.root")
    try:
        generate_smoke(path)
    except FileExistsError:
        # An older version of our own generated set: it is a cache, so replace it.
        shutil.rmtree(path)
        generate_smoke(path)
    return VOCLayoutDataset(path, split, max_images)


def collate_samples(batch: list[Sample]) -> list[Sample]:
    """Keep samples as a list: images differ in size and are processed one by one."""
    return batch


class SegmentationDataModule(L.LightningDataModule):
    """Serves one test split.

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
        return DataLoader(
            self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
            collate_fn=collate_samples, persistent_workers=False,
        )
