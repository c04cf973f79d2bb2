"""Helpers shared by several test files (fixtures live in conftest.py).

The benchmark layouts are spelled out here independently of `rim_bench.data`, from
mmsegmentation's converted layouts (see datasets/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# name: (class count, raw label values to draw from, raw value → expected class id)
BENCHMARKS = {
    "voc21": (21, [0, 1, 20, 255], {0: 0, 1: 1, 20: 20, 255: 255}),
    "voc20": (20, [0, 1, 20, 255], {0: 255, 1: 0, 20: 19, 255: 255}),
    "context60": (60, [0, 1, 59], {0: 0, 59: 59}),
    "context59": (59, [0, 1, 59], {0: 255, 1: 0, 59: 58}),
    "coco_object": (81, [0, 1, 80], {0: 0, 80: 80}),
    "coco_stuff171": (171, [0, 170, 255], {0: 0, 170: 170, 255: 255}),
    "ade20k": (150, [0, 1, 150], {0: 255, 1: 0, 150: 149}),
    "cityscapes": (19, [0, 18, 255], {0: 0, 18: 18, 255: 255}),
}


def save_image(path: Path, array: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if palette:
        img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    img.save(path)


def benchmark_paths(name: str, root: Path, image_id: str) -> tuple[Path, Path]:
    """Where each benchmark keeps one image and its label (mmsegmentation's layouts)."""
    if name in ("voc21", "voc20"):
        base = root / "VOCdevkit/VOC2012"
        return base / f"JPEGImages/{image_id}.jpg", base / f"SegmentationClass/{image_id}.png"
    if name in ("context60", "context59"):
        base = root / "VOCdevkit/VOC2010"
        return base / f"JPEGImages/{image_id}.jpg", base / f"SegmentationClassContext/{image_id}.png"
    if name == "coco_object":
        base = root / "coco_stuff164k"
        return base / f"images/val2017/{image_id}.jpg", base / f"annotations/val2017/{image_id}_instanceTrainIds.png"
    if name == "coco_stuff171":
        base = root / "coco_stuff164k"
        return base / f"images/val2017/{image_id}.jpg", base / f"annotations/val2017/{image_id}_labelTrainIds.png"
    if name == "ade20k":
        base = root / "ADEChallengeData2016"
        return base / f"images/validation/{image_id}.jpg", base / f"annotations/validation/{image_id}.png"
    base = root / "cityscapes"
    return (base / f"leftImg8bit/val/aachen/{image_id}_leftImg8bit.png",
            base / f"gtFine/val/aachen/{image_id}_gtFine_labelTrainIds.png")


def write_benchmark(name: str, root: Path, n: int = 3, size: tuple[int, int] = (21, 30)) -> list[str]:
    """Write `n` images with labels drawn from the benchmark's raw values; returns the ids."""
    rng = np.random.default_rng(0)
    values = BENCHMARKS[name][1]
    ids = [f"img_{i:03d}" for i in range(n)]
    for image_id in ids:
        image_path, label_path = benchmark_paths(name, root, image_id)
        save_image(image_path, rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        label = np.array(values, dtype=np.uint8)[rng.integers(0, len(values), size)]
        label[0, : len(values)] = values  # every raw value occurs
        save_image(label_path, label, palette=name.startswith("voc"))
    split = {"voc21": "VOCdevkit/VOC2012/ImageSets/Segmentation", "voc20": "VOCdevkit/VOC2012/ImageSets/Segmentation",
             "context60": "VOCdevkit/VOC2010/ImageSets/SegmentationContext",
             "context59": "VOCdevkit/VOC2010/ImageSets/SegmentationContext"}.get(name)
    if split:
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "val.txt").write_text("\n".join(ids) + "\n")
    return ids


def fake_finished_runs(monkeypatch, folder: Path) -> tuple[list[str], Path]:
    """`rim-bench test` replaced by a stand-in that writes what a finished run leaves (a
    metrics.json with the config's result hash), cwd set to `folder`, and a 2-point sweep file
    there. Returns the output folders the stand-in has run in, in order, and the sweep file."""
    import json

    from rim_bench.core.config import config_hash, resolve
    from rim_bench.run import runner
    from rim_bench.run.methods import result_spec

    runs: list[str] = []

    def fake_test(cfg, label=None):
        metrics = {"mIoU": 1.0, "mAcc": 2.0, "aAcc": 3.0, "num_images": 1,
                   "result_hash": config_hash(result_spec(resolve(cfg.copy())))}
        runs.append(cfg.output_dir)
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.output_dir) / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(runner, "run_test", fake_test)
    monkeypatch.chdir(folder)
    sweep_file = folder / "t.yaml"
    sweep_file.write_text("parameters:\n  matcher.rim.temperature: [0.05, 0.2]\n")
    return runs, sweep_file


def run_folder(folder: Path, miou: float | None = 50.0, classes: tuple[str, ...] = ("sky", "leaf")) -> Path:
    """A finished run's folder as `rim-bench test` writes it (the files `report` reads)."""
    import json

    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "mIoU": miou, "mAcc": 60.0, "aAcc": 70.0, "num_images": 2,
        "per_class_iou": {name: 40.0 + i for i, name in enumerate(classes)}}))
    (folder / "config.yaml").write_text("experiment: smoke\ndata: {name: smoke}\nmatcher: {name: rim}\n")
    return folder


SPLIT = "ImageSets/Segmentation/val.txt"  # the smoke set's split file


def split_ids(root: Path) -> list[str]:
    """The image ids of a copy of the smoke set."""
    return (root / SPLIT).read_text().split()


def smoke_copy_args(root: Path, *overrides: str) -> list[str]:
    """`rim-bench test` arguments for a copy of the smoke benchmark."""
    return ["experiment=smoke", "data.name=voc_layout", "data.classes=smoke", f"data.root={root}",
            f"references.exemplars.root={root / 'exemplars'}", *overrides]


def error_of(capsys, prog: str = "rim-bench") -> str:
    """The one stderr line a user error prints (no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def label_out_of_range(root: Path, image_id: str) -> None:
    """Give `image_id` a label of the image's size whose values are all 200 (smoke has 6 classes)."""
    with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as img:
        size = img.size[::-1]
    Image.fromarray(np.full(size, 200, dtype=np.uint8)).save(root / "SegmentationClass" / f"{image_id}.png")
