"""The overlay pictures written with save_overlays=N."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from rim_bench.visualize import legend_classes, overlay_panel, save_overlay

NAMES = ["background", "cat", "dog", "sofa"]


def _inputs(h: int = 30, w: int = 40) -> dict:
    image = np.full((h, w, 3), 100, dtype=np.uint8)
    region_map = np.zeros((h, w), dtype=np.int64)
    region_map[:, w // 2:] = 1
    prediction = np.zeros((h, w), dtype=np.int64)
    prediction[:, w // 2:] = 1
    prediction[0, 0] = 255  # unassigned
    label = np.zeros((h, w), dtype=np.int64)
    label[:, w // 2:] = 3
    label[-1, :] = 255  # ignored
    return dict(image=image, region_map=region_map, prediction=prediction, label=label, class_names=NAMES,
                image_id="img_1")


def test_legend_lists_classes_in_prediction_or_label():
    args = _inputs()
    assert legend_classes(args["prediction"], args["label"], len(NAMES)) == [0, 1, 3]


def test_panel_layout_and_unassigned_pixels_keep_the_image():
    args = _inputs()
    panel = np.asarray(overlay_panel(**args))
    assert panel.ndim == 3 and panel.shape[2] == 3
    assert panel.shape[1] == 4 * 40 + 3 * 4 and panel.shape[0] > 30 + 2 * 18  # titles, caption, legend
    prediction_panel = panel[18:18 + 30, 2 * (40 + 4): 3 * (40 + 4) - 4]
    assert tuple(prediction_panel[0, 0]) == (100, 100, 100)  # 255: the image, unblended
    assert tuple(prediction_panel[5, 5]) != (100, 100, 100)  # class 0 blended over it


def test_large_images_are_shrunk_and_no_regions_work():
    args = _inputs(600, 900)
    args["region_map"][:] = -1
    panel = overlay_panel(**args, max_side=200)
    assert panel.width == 4 * 200 + 3 * 4


def test_save_overlay_is_atomic(tmp_path: Path):
    save_overlay(tmp_path / "o.png", **_inputs())
    with Image.open(tmp_path / "o.png") as img:
        assert img.mode == "RGB"
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_run_writes_n_overlays(tmp_path: Path):
    from rim_bench.cli import main

    out = tmp_path / "out"
    assert main(["test", "experiment=smoke", "data.max_images=4", "save_overlays=2", f"output_dir={out}"]) == 0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["smoke_0000.png", "smoke_0001.png"]
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 4
