"""The overlay pictures written with save_overlays=N."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rim_bench.data.palette import voc_palette
from rim_bench.run.visualize import CLASS_ALPHA, GAP, legend_classes, overlay_panel, region_boundaries, save_overlay

NAMES = ["background", "cat", "dog", "sofa"]
GREY = (100, 100, 100)  # the synthetic image's colour, absent from every drawn colour below


def _inputs(h: int = 30, w: int = 40) -> dict:
    """A flat grey image: two regions (left / right half), prediction {0, 1, 255}, label {0, 3, 255}."""
    image = np.full((h, w, 3), GREY, dtype=np.uint8)
    region_map = np.zeros((h, w), dtype=np.int64)
    region_map[:, w // 2:] = 1
    prediction = np.zeros((h, w), dtype=np.int64)
    prediction[:, w // 2:] = 1
    prediction[:5, :5] = 255  # unassigned
    label = np.zeros((h, w), dtype=np.int64)
    label[:, w // 2:] = 3
    label[-5:, -5:] = 255  # ignored
    return dict(image=image, region_map=region_map, prediction=prediction, label=label, class_names=NAMES,
                image_id="img_1")


def _panels(picture: Image.Image, h: int, w: int) -> list[np.ndarray]:
    """The four ``(h, w, 3)`` panels cut out of `picture`; their top is the first row of the bare image."""
    pixels = np.asarray(picture)
    top = int(np.flatnonzero((pixels[:, 0] == GREY).all(axis=1))[0])
    return [pixels[top:top + h, i * (w + GAP): i * (w + GAP) + w] for i in range(4)]


def test_legend_lists_exactly_the_classes_in_prediction_or_label():
    args = _inputs()
    assert legend_classes(args["prediction"], args["label"], len(NAMES)) == [0, 1, 3]
    # 255 is never listed; nor an id without a name.
    assert legend_classes(np.array([[255, 2]]), np.array([[255, 7]]), 4) == [2]
    assert legend_classes(np.full((2, 2), 255), np.full((2, 2), 255), 4) == []


def test_layout_is_four_panels_and_a_legend():
    args = _inputs()
    picture = overlay_panel(**args)
    assert picture.mode == "RGB"
    assert picture.width == 4 * 40 + 3 * GAP
    assert picture.height > 30 + 3 * 12  # titles, caption and one legend row at least
    # Each legend row adds height: many classes in a narrow picture wrap onto more rows.
    many = [f"class_{i}" for i in range(12)]
    ids = np.arange(30 * 40).reshape(30, 40) % 12
    taller = overlay_panel(**{**args, "prediction": ids, "label": ids, "class_names": many})
    assert taller.width == picture.width and taller.height > picture.height


def test_unassigned_and_ignored_pixels_keep_the_image():
    args = _inputs()
    palette = np.array(voc_palette()).reshape(256, 3)
    image, regions, prediction, truth = _panels(overlay_panel(**args), 30, 40)
    assert (image == GREY).all()
    assert tuple(prediction[0, 0]) == GREY  # 255: unassigned, the bare image
    assert tuple(truth[-1, -1]) == GREY  # 255: ignored, the bare image
    # Class pixels: the class colour blended over the image.
    expected = np.round((1 - CLASS_ALPHA) * np.array(GREY) + CLASS_ALPHA * palette[1]).astype(int)
    assert tuple(prediction[10, 30]) == tuple(expected)
    assert tuple(truth[10, 30]) != GREY and tuple(truth[10, 10]) != GREY
    # Regions: filled away from the boundary, white on it (columns 19 and 20 meet).
    assert tuple(regions[10, 5]) != GREY and tuple(regions[10, 30]) != tuple(regions[10, 5])
    assert (regions[:, 19:21] == 255).all()


def test_no_regions_leaves_the_image_bare():
    args = _inputs()
    args["region_map"][:] = -1
    _, regions, _, _ = _panels(overlay_panel(**args), 30, 40)
    assert (regions == GREY).all()


def test_region_boundaries_mark_both_sides():
    region_map = np.array([[0, 0, 1],
                           [0, 0, 1],
                           [-1, -1, 1]])
    assert region_boundaries(region_map).astype(int).tolist() == [[0, 1, 1],
                                                                   [1, 1, 1],
                                                                   [1, 1, 1]]
    assert not region_boundaries(np.full((3, 3), -1)).any()


def test_rendering_is_reproducible():
    args = _inputs()
    assert np.array_equal(np.asarray(overlay_panel(**args)), np.asarray(overlay_panel(**args)))


def test_large_images_are_shrunk():
    args = _inputs(600, 900)
    picture = overlay_panel(**args, max_side=200)
    assert picture.width == 4 * 200 + 3 * GAP
    bare = (np.asarray(picture)[:, 0] == GREY).all(axis=1)
    assert bare.sum() == 133  # 600 * 200 / 900 rows of the image panel: the aspect is kept


def test_odd_inputs():
    args = _inputs()
    # No scored pixel and a non-ASCII class name still render.
    args["label"][:] = 255
    args["class_names"] = ["background", "chat \u00e9tonn\u00e9", "dog", "sofa"]
    assert overlay_panel(**args).mode == "RGB"
    with pytest.raises(ValueError, match="prediction has shape"):
        overlay_panel(**{**args, "prediction": args["prediction"][:-1]})
    with pytest.raises(ValueError, match="uint8"):
        overlay_panel(**{**args, "image": args["image"].astype(np.float32)})


def test_save_overlay_is_atomic(tmp_path: Path):
    path = tmp_path / "o.png"
    save_overlay(path, **_inputs())
    save_overlay(path, **_inputs())  # overwriting works too
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.width == 4 * 40 + 3 * GAP
    with pytest.raises(ValueError):
        save_overlay(tmp_path / "bad.png", **{**_inputs(), "label": np.zeros((2, 2), dtype=np.int64)})
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]  # no temp file, no half-written picture


def test_run_writes_n_overlays(tmp_path: Path):
    from rim_bench.commands.cli import main

    out = tmp_path / "out"
    assert main(["test", "experiment=smoke", "data.max_images=4", "save_overlays=2", f"output_dir={out}"]) == 0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["smoke_0000.png", "smoke_0001.png"]
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 4
