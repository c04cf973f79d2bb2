"""Each benchmark's data set on tiny fixtures written in its real on-disk layout.

The layouts are spelled out here independently of `rim_bench.data`, from mmsegmentation's
converted layouts (see datasets/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import BENCHMARKS, benchmark_paths, save_image, write_benchmark
from omegaconf import OmegaConf
from PIL import Image

from rim_bench.core.errors import DataError
from rim_bench.run.datamodule import ShardSampler, build_dataset


def _dataset(name: str, root: Path, **data):
    return build_dataset(OmegaConf.create({"name": name, "root": str(root), "split": "val", "classes": None,
                                           "max_images": None, **data}))


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_counts_classes_and_label_mapping(name: str, tmp_path: Path):
    ids = write_benchmark(name, tmp_path, n=3)
    dataset, classes = _dataset(name, tmp_path)
    num_classes, values, mapping = BENCHMARKS[name]
    assert len(dataset) == 3 and len(classes) == num_classes
    sample = dataset[0]
    assert sample.image_id == ids[0] and sample.image.shape == (3, 21, 30) and sample.image.dtype == torch.uint8
    assert sample.label.shape == (21, 30) and sample.label.dtype == torch.uint8
    raw_first_row = values  # written into row 0 above
    for column, raw in enumerate(raw_first_row):
        assert int(sample.label[0, column]) == mapping.get(raw, raw), (name, raw)


@pytest.mark.parametrize("name", ["voc21", "coco_object"])
def test_root_may_be_the_benchmark_folder_itself(name: str, tmp_path: Path):
    write_benchmark(name, tmp_path, n=2)
    inner = {"voc21": "VOCdevkit/VOC2012", "coco_object": "coco_stuff164k"}[name]
    assert len(_dataset(name, tmp_path / inner)[0]) == 2


def test_max_images(tmp_path: Path):
    write_benchmark("voc21", tmp_path, n=4)
    assert len(_dataset("voc21", tmp_path, max_images=2)[0]) == 2


def test_missing_root(tmp_path: Path):
    with pytest.raises(DataError, match=r"data root '.*nowhere' does not exist"):
        _dataset("voc21", tmp_path / "nowhere")


def test_wrong_layout_names_what_was_expected(tmp_path: Path):
    (tmp_path / "something_else").mkdir()
    with pytest.raises(DataError, match=r"expected layout: wanted VOCdevkit/VOC2010/JPEGImages/.*found something_else"
                                         r".*rim-bench convert context"):
        _dataset("context60", tmp_path)


def test_missing_split_file(tmp_path: Path):
    write_benchmark("voc21", tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(DataError, match=r"split file '.*ImageSets/Segmentation/val.txt' not found"):
        _dataset("voc21", tmp_path)


def test_image_without_label(tmp_path: Path):
    ids = write_benchmark("coco_object", tmp_path)
    benchmark_paths("coco_object", tmp_path, ids[1])[1].unlink()
    with pytest.raises(DataError, match=rf"image '{ids[1]}.jpg' has no label: .*_instanceTrainIds.png' not found"):
        _dataset("coco_object", tmp_path)


def test_corrupt_image_label_out_of_range_and_size_mismatch(tmp_path: Path):
    ids = write_benchmark("voc21", tmp_path, n=4)
    benchmark_paths("voc21", tmp_path, ids[0])[0].write_bytes(b"not a jpeg")
    save_image(benchmark_paths("voc21", tmp_path, ids[1])[1], np.full((21, 30), 30, dtype=np.uint8))
    save_image(benchmark_paths("voc21", tmp_path, ids[2])[1], np.zeros((20, 30), dtype=np.uint8))
    # The file headers show two problems before anything is decoded: both are named at once.
    with pytest.raises(DataError, match=rf"2 of 4 samples .*{ids[0]}.jpg' cannot be read as an image.*"
                                        r"is 20x30 but image .* is 21x30"):
        _dataset("voc21", tmp_path)
    dataset, _ = _dataset("voc21", tmp_path, skip_bad=True)  # the rest can be scored
    assert [e.image_id for e in dataset.entries] == [ids[1], ids[3]]
    with pytest.raises(DataError, match=r"values \[30\] outside the 21 classes"):
        dataset._read(dataset.entries[0])
    assert dataset[0].image_id == ids[1] and "values [30]" in dataset[0].problem  # a BadSample
    problems = list(dataset.check_all())
    assert len(problems) == 3 and all(i in p for i, p in zip([ids[0], ids[2], ids[1]], problems))


def test_check_data_command(tmp_path: Path):
    write_benchmark("ade20k", tmp_path, n=3)
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "rim_bench.commands.cli", "check-data", "data.name=ade20k", f"data.root={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    ok = run()
    assert ok.returncode == 0 and "ok: 3 images" in ok.stdout and "150 classes" in ok.stdout
    save_image(benchmark_paths("ade20k", tmp_path, "img_001")[1], np.full((21, 30), 200, dtype=np.uint8))
    bad = run()
    assert bad.returncode == 2 and "values [200] outside the 150 classes" in bad.stdout
    assert "Traceback" not in bad.stderr  # above it: the progress bar
    assert bad.stderr.strip().splitlines()[-1] == (
        f"rim-bench: error: 1 of 3 images in {tmp_path / 'ADEChallengeData2016'} have problems (listed above); "
        "the data set has 150 classes"
    )


@pytest.mark.parametrize("length, world", [(5, 2), (7, 3), (2, 4), (0, 2), (6, 1)])
def test_shard_sampler_covers_every_sample_once(length: int, world: int):
    shards = [list(ShardSampler(length, rank, world)) for rank in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(length))
    assert [len(ShardSampler(length, r, world)) for r in range(world)] == [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_voc_benchmark_end_to_end_scores_at_label_size(tmp_path: Path):
    """`rim-bench test` on a VOC-layout fixture: one prediction per image, at the label's size."""
    from rim_bench.commands.cli import main

    ids = write_benchmark("voc21", tmp_path / "data", n=3, size=(37, 53))
    exemplars = tmp_path / "exemplars"
    classes = [line.split(",")[0] for line in
               (Path(__file__).parent.parent / "rim_bench/data/classes/voc21.txt").read_text().splitlines()]
    rng = np.random.default_rng(1)
    for name in classes:
        save_image(exemplars / name / "default" / "0.jpg", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["test", "experiment=smoke", "data.name=voc21", f"data.root={tmp_path / 'data'}",
                 f"references.exemplars.root={exemplars}", f"output_dir={out}", "save_predictions=true"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and len(metrics["per_class_iou"]) == 21
    for image_id in ids:
        with Image.open(out / "predictions" / f"{image_id}.png") as pred:
            assert pred.size == (53, 37)
