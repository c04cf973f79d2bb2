"""End to end: `rim-bench test experiment=smoke` on the embedded synthetic benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from rim_bench.commands.cli import main


def _run(tmp_path: Path, name: str, *overrides: str) -> dict:
    out = tmp_path / name
    assert main(["test", "experiment=smoke", f"output_dir={out}", *overrides]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("smoke")
    return tmp / "rim", _run(tmp, "rim", "save_predictions=true")


def test_smoke_writes_metrics_config_and_predictions(smoke_run, smoke_root: Path):
    out, metrics = smoke_run
    assert {"mIoU", "mAcc", "aAcc", "per_class_iou", "num_images"} <= metrics.keys()
    assert list(metrics["per_class_iou"]) == ["background", "sun", "leaf", "sea", "berry", "grape"]
    ids = (smoke_root / "ImageSets/Segmentation/val.txt").read_text().split()
    assert metrics["num_images"] == len(ids) == 24
    for image_id in ids:
        with Image.open(out / "predictions" / f"{image_id}.png") as pred, \
                Image.open(smoke_root / "JPEGImages" / f"{image_id}.jpg") as img:
            assert pred.size == img.size and pred.mode == "P"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["experiment"] == "smoke" and config["output_dir"] == str(out)
    assert "${" not in (out / "config.yaml").read_text()  # resolved
    assert (out / "csv" / "metrics.csv").read_text().count("test/mIoU") == 1


def test_metrics_report_time_memory_and_throughput(smoke_run):
    _, metrics = smoke_run
    seconds, memory = metrics["seconds"], metrics["peak_memory_mb"]["host_rss"]
    for stage in ("data setup", "load models", "reference bank", "data", "matching", "painting", "scoring", "writing"):
        assert seconds[stage] > 0, stage
    for stage in ("data setup", "load models", "reference bank", "matching", "painting", "scoring", "total"):
        assert memory[stage] > 0, stage
    assert memory["total"] >= max(memory.values())
    assert metrics["throughput"]["images_per_second"] > 0 and metrics["throughput"]["test_loop_seconds"] > 0
    split = metrics["seconds_split"]
    assert split["framework"] > 0 and split["models"] > 0
    assert split["framework"] + split["models"] <= seconds["total"]


def test_metrics_give_the_whole_wall_time_split_into_start_up_and_the_run(smoke_run):
    """Start-up (imports, models, bank) counts too: from the process's start (or, in this test process,
    the end of the run before) to the test loop, then the loop; together the whole wall time."""
    _, metrics = smoke_run
    wall, seconds = metrics["wall_seconds"], metrics["seconds"]
    assert wall["start_up"] + wall["run"] == pytest.approx(wall["whole"], abs=1e-3)
    assert wall["whole"] >= seconds["total"] >= wall["run"] > 0
    assert wall["start_up"] >= seconds["load models"] + seconds["reference bank"]  # model loading is start-up
    assert wall["run"] == pytest.approx(metrics["throughput"]["test_loop_seconds"], abs=1e-3)
    assert wall["run_is"] == "test loop" and wall["start_up_from"] in ("process start",
                                                                        "end of the previous run in this process")


def test_writing_between_steps_is_not_counted_as_data_too(tmp_path: Path, monkeypatch):
    """The ResultWriter writes between two steps: that time is "writing", not also the wait for data
    (counted twice, the stages' sum came out above the wall time on a loaded machine)."""
    import time

    from rim_bench.run import results

    slow_write = 0.05
    save = results.save_label_png
    monkeypatch.setattr(results, "save_label_png", lambda *a: (time.sleep(slow_write), save(*a)))
    metrics = _run(tmp_path, "slow-writes", "save_predictions=true", "data.max_images=6")
    seconds = metrics["seconds"]
    assert seconds["writing"] >= 6 * slow_write
    assert seconds["data"] < 5 * slow_write  # it held every write before
    assert sum(metrics["seconds_split"].values()) <= seconds["total"]


def test_smoke_is_far_above_random_region_labels(smoke_run, tmp_path: Path):
    _, rim = smoke_run
    chance = _run(tmp_path, "random", "matcher.name=random")
    # Measured: RIM about 63 mIoU, random labels about 5.5 (3 seeds: 5.4-5.6).
    assert chance["mIoU"] < 15
    assert rim["mIoU"] > 45 and rim["mIoU"] > 3 * chance["mIoU"]


def test_second_run_reuses_the_bank_and_gives_the_same_numbers(smoke_run, tmp_path: Path):
    _, first = smoke_run
    again = _run(tmp_path, "again")
    assert again["bank"]["cached"] is True and again["bank"]["path"] == first["bank"]["path"]
    assert again["per_class_iou"] == first["per_class_iou"] and again["mIoU"] == first["mIoU"]
    assert again["result_hash"] == first["result_hash"]


def test_wandb_offline_run_is_written(tmp_path: Path):
    metrics = _run(tmp_path, "wb", "logger=wandb", "data.max_images=2")
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert metrics["num_images"] == 2 and len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds no logged data"


def test_a_later_run_does_not_inherit_an_earlier_runs_output_folder(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RIM_BENCH_OUTPUT_DIR", str(tmp_path / "earlier"))  # as a first run in this process leaves it
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert main(["test", "experiment=smoke", "data.max_images=1"]) == 0
    assert not (tmp_path / "earlier").exists() and list((tmp_path / "outputs").glob("smoke-*/metrics.json"))


def test_wall_time_covers_opening_the_data(tmp_path: Path, monkeypatch):
    """`rim-bench test` opens the data before the Trainer starts: the total still covers it."""
    import time

    from rim_bench.run.datamodule import BenchmarkDataModule

    opened = BenchmarkDataModule.setup
    monkeypatch.setattr(BenchmarkDataModule, "setup", lambda self, stage=None: (time.sleep(1.0), opened(self, stage)))
    metrics = _run(tmp_path, "slow-data", "data.max_images=2")
    seconds, split = metrics["seconds"], metrics["seconds_split"]
    assert seconds["data setup"] >= 1.0
    assert split["framework"] + split["models"] <= seconds["total"]
