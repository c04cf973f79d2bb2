"""Data loading throughput against the featurizer's time per image.

    python benchmarks/data_loading.py [experiment=smoke] [data.num_workers=2] [key=value ...]

Prints images/s of the configured DataLoader (decode + label mapping, workers as set)
and the featurizer's seconds per image, and their ratio: how many times faster the
loader delivers images than the featurizer consumes them (below 1, loading is the
bottleneck: raise data.num_workers). On a set as small as the smoke benchmark, worker
start-up dominates; measure workers on a real benchmark (data.max_images=200).
"""

from __future__ import annotations

import sys
import time

import torch

from rim_bench.core.config import load_config, resolve
from rim_bench.core.registry import FEATURIZERS, build_stage
from rim_bench.run.datamodule import SegmentationDataModule, build_dataset


def main(argv: list[str]) -> None:
    cfg = resolve(load_config(argv or ["experiment=smoke"]))
    dataset, _ = build_dataset(cfg.data)
    loader = SegmentationDataModule(dataset, 1, cfg.data.num_workers).test_dataloader()

    start = time.perf_counter()
    samples = [s for batch in loader for s in batch]
    load_s = time.perf_counter() - start
    images_per_s = len(samples) / load_s

    featurizer = build_stage(FEATURIZERS, cfg.featurizer, "featurizer")
    featurizer(samples[0].image)  # warm-up
    start = time.perf_counter()
    for sample in samples:
        featurizer(sample.image)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    feature_s = (time.perf_counter() - start) / len(samples)

    print(f"images: {len(samples)}  workers: {cfg.data.num_workers}  featurizer: {cfg.featurizer.dinov2.model}")
    print(f"data loading      {images_per_s:8.1f} images/s  ({1000 / images_per_s:.1f} ms/image)")
    print(f"featurizer        {1 / feature_s:8.1f} images/s  ({1000 * feature_s:.1f} ms/image)")
    print(f"ratio loading/featurizer throughput: {images_per_s * feature_s:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
