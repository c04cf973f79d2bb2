"""The data-set converters on tiny raw inputs built in tmp_path (no binary fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from rim_bench.core.errors import ConfigError, DataError
from rim_bench.data.converters import CONVERTERS
from rim_bench.data.converters.coco import THING_IDS, USED_IDS
from rim_bench.data.converters.context import CONTEXT59_IDS


def save_png(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)
    return path


def load_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L"
        return np.array(img)


# ---------------------------------------------------------------- PASCAL-Context

CONTEXT_VAL = {
    # 459-class ids: 2 aeroplane → 1, 9 bag → 2, 458 wood → 59, 1 accordion and 100 → background 0
    "2008_000002": (np.array([[2, 9, 1], [458, 0, 100]], np.uint16), np.array([[1, 2, 0], [59, 0, 0]])),
    "2008_000007": (np.array([[284, 459, 2]], np.uint16), np.array([[37, 0, 1]])),  # 284 person
}
CONTEXT_TRAIN = "2008_000003"


@pytest.fixture()
def context_src(tmp_path: Path) -> Path:
    src = tmp_path / "raw"
    (src / "trainval").mkdir(parents=True)
    for image_id, (label_map, _) in CONTEXT_VAL.items():
        scipy.io.savemat(src / "trainval" / f"{image_id}.mat", {"LabelMap": label_map})
    scipy.io.savemat(src / "trainval" / f"{CONTEXT_TRAIN}.mat", {"LabelMap": np.full((2, 2), 9, np.uint16)})
    (src / "labels.txt").write_text("".join(f"{i}: name_{i}\n" for i in range(1, 460)))
    images = [{"file_name": f"{i}.jpg", "phase": "val", "image_id": n} for n, i in enumerate(CONTEXT_VAL)]
    images.append({"file_name": f"{CONTEXT_TRAIN}.jpg", "phase": "train", "image_id": 9})
    (src / "trainval_merged.json").write_text(json.dumps({"images": images, "annos_segmentation": []}))
    return src


def test_context59_table_matches_mmsegmentation() -> None:
    assert len(CONTEXT59_IDS) == 59 and list(CONTEXT59_IDS) == sorted(set(CONTEXT59_IDS))
    assert CONTEXT59_IDS[:12] == (2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45) and CONTEXT59_IDS[-1] == 458


def test_context_converts_the_split(context_src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "data"
    report = CONVERTERS["context"](context_src, dst, split="val")
    root = dst / "VOCdevkit" / "VOC2010"
    assert (report.written, report.skipped, report.total, report.out_dir) == (2, 0, 2, root)
    out = root / "SegmentationClassContext"
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.png" for i in sorted(CONTEXT_VAL)]
    for image_id, (_, expected) in CONTEXT_VAL.items():
        np.testing.assert_array_equal(load_png(out / f"{image_id}.png"), expected)
    assert (root / "ImageSets" / "SegmentationContext" / "val.txt").read_text() == "2008_000002\n2008_000007\n"


def test_context_resumes(context_src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "data"
    CONVERTERS["context"](context_src, dst)
    again = CONVERTERS["context"](context_src, dst)
    assert (again.written, again.skipped, again.total) == (0, 2, 2)
    (dst / "VOCdevkit/VOC2010/SegmentationClassContext/2008_000007.png").unlink()
    resumed = CONVERTERS["context"](context_src, dst)
    assert (resumed.written, resumed.skipped) == (1, 1)


def test_context_mat_without_label_map(context_src: Path, tmp_path: Path) -> None:
    bad = context_src / "trainval" / "2008_000002.mat"
    scipy.io.savemat(bad, {"Other": np.zeros((2, 2))})
    with pytest.raises(DataError, match="LabelMap") as e:
        CONVERTERS["context"](context_src, tmp_path / "data")
    assert str(bad) in str(e.value)


def test_context_id_out_of_range(context_src: Path, tmp_path: Path) -> None:
    bad = context_src / "trainval" / "2008_000002.mat"
    scipy.io.savemat(bad, {"LabelMap": np.array([[2, 460]], np.uint16)})
    with pytest.raises(DataError, match="value 460") as e:
        CONVERTERS["context"](context_src, tmp_path / "data")
    assert str(bad) in str(e.value)


def test_context_json_without_split_fields(context_src: Path, tmp_path: Path) -> None:
    json_path = context_src / "trainval_merged.json"
    json_path.write_text(json.dumps({"images": [{"file_name": "2008_000002.jpg"}]}))
    with pytest.raises(DataError, match="phase") as e:
        CONVERTERS["context"](context_src, tmp_path / "data")
    assert str(json_path) in str(e.value)


def test_context_unknown_split(context_src: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"choose --split from \['train', 'val'\]"):
        CONVERTERS["context"](context_src, tmp_path / "data", split="test")


# ---------------------------------------------------------------- COCO

COCO_RAW = np.array([[0, 11, 89, 91, 181, 255]])  # 11 is an unused id
COCO_EXPECTED = {
    ("coco_stuff171", None): [0, 255, 79, 80, 170, 255],
    ("coco_object", "background"): [1, 0, 80, 0, 0, 0],
    ("coco_object", "ignore"): [1, 255, 80, 0, 0, 255],
}


def test_coco_tables_match_mmsegmentation() -> None:
    assert len(USED_IDS) == 171 and len(THING_IDS) == 80
    # spot checks against mmsegmentation's clsID_to_trID, around each gap
    trid = {raw: k for k, raw in enumerate(USED_IDS)}
    assert [trid[i] for i in (10, 12, 26, 30, 45, 66, 69, 71, 83, 89, 91, 181)] == [
        10, 11, 24, 26, 40, 60, 61, 62, 73, 79, 80, 170]


@pytest.mark.parametrize(("name", "unlabeled"), list(COCO_EXPECTED))
def test_coco_values(tmp_path: Path, name: str, unlabeled: str | None) -> None:
    save_png(tmp_path / "raw" / "val2017" / "000000000139.png", COCO_RAW)
    options = {"unlabeled": unlabeled} if unlabeled else {}
    report = CONVERTERS[name](tmp_path / "raw", tmp_path / "data", split="val", **options)
    root = tmp_path / "data" / "coco_stuff164k"
    assert (report.written, report.total, report.out_dir) == (1, 1, root)
    suffix = "_labelTrainIds.png" if name == "coco_stuff171" else "_instanceTrainIds.png"
    out = load_png(root / "annotations" / "val2017" / f"000000000139{suffix}")
    assert out.tolist() == [COCO_EXPECTED[name, unlabeled]]


@pytest.mark.parametrize("layout", ["parent", "zip_folder", "split_folder"])
def test_coco_source_layouts(tmp_path: Path, layout: str) -> None:
    save_png(tmp_path / "stuffthingmaps_trainval2017" / "val2017" / "000000000139.png", COCO_RAW)
    src = {"parent": tmp_path, "zip_folder": tmp_path / "stuffthingmaps_trainval2017",
           "split_folder": tmp_path / "stuffthingmaps_trainval2017" / "val2017"}[layout]
    assert CONVERTERS["coco_stuff171"](src, tmp_path / "data").written == 1


def test_coco_skips_converted_files_beside_raw_ones(tmp_path: Path) -> None:
    annotations = tmp_path / "coco_stuff164k" / "annotations"  # mmsegmentation's in-place layout
    save_png(annotations / "val2017" / "000000000139.png", COCO_RAW)
    CONVERTERS["coco_stuff171"](annotations, tmp_path)
    assert (annotations / "val2017" / "000000000139_labelTrainIds.png").is_file()
    assert CONVERTERS["coco_object"](annotations, tmp_path).total == 1


def test_coco_value_above_181(tmp_path: Path) -> None:
    bad = save_png(tmp_path / "raw" / "val2017" / "000000000139.png", np.array([[0, 200, 255]]))
    with pytest.raises(DataError, match="value 200") as e:
        CONVERTERS["coco_stuff171"](tmp_path / "raw", tmp_path / "data")
    assert str(bad) in str(e.value)


def test_coco_object_bad_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unlabeled"):
        CONVERTERS["coco_object"](tmp_path, tmp_path, unlabeled="void")


# ---------------------------------------------------------------- Cityscapes

def test_cityscapes_values(tmp_path: Path) -> None:
    raw = np.array([[7, 26, 0, 33, 9, 255]])  # road, car, unlabeled, bicycle, parking (ignored), plate
    save_png(tmp_path / "raw" / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png", raw)
    report = CONVERTERS["cityscapes"](tmp_path / "raw", tmp_path / "data")
    root = tmp_path / "data" / "cityscapes"
    assert (report.written, report.out_dir) == (1, root)
    out = load_png(root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelTrainIds.png")
    assert out.tolist() == [[0, 13, 255, 18, 255, 255]]


@pytest.mark.parametrize("dst_is", ["src", "parent"])
def test_cityscapes_in_place(tmp_path: Path, dst_is: str) -> None:
    src = tmp_path / "cityscapes"
    save_png(src / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png", np.array([[7]]))
    report = CONVERTERS["cityscapes"](src, src if dst_is == "src" else tmp_path)
    assert report.out_dir == src
    assert (src / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelTrainIds.png").is_file()


# ---------------------------------------------------------------- shared behaviour

@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_missing_source(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match="not found") as e:
        CONVERTERS[name](tmp_path / "missing", tmp_path / "data")
    assert str(tmp_path / "missing") in str(e.value)


def test_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_png(tmp_path / "raw" / "val2017" / "000000000139.png", COCO_RAW)
    save_png(tmp_path / "raw" / "val2017" / "000000000285.png", COCO_RAW)
    real_save = Image.Image.save
    calls = []

    def crash_on_second(self: Image.Image, fp, *args, **kwargs) -> None:
        calls.append(fp)
        if len(calls) == 2:
            Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n partial")  # half a file, then the crash
            raise KeyboardInterrupt
        real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        CONVERTERS["coco_stuff171"](tmp_path / "raw", tmp_path / "data")
    out = tmp_path / "data" / "coco_stuff164k" / "annotations" / "val2017"
    assert sorted(p.name for p in out.iterdir()) == ["000000000139_labelTrainIds.png"]  # no partial, no temp

    monkeypatch.setattr(Image.Image, "save", real_save)
    report = CONVERTERS["coco_stuff171"](tmp_path / "raw", tmp_path / "data")
    assert (report.written, report.skipped) == (1, 1)
    assert load_png(out / "000000000285_labelTrainIds.png").tolist() == [COCO_EXPECTED["coco_stuff171", None]]


# ---------------------------------------------------------------- converter output → benchmark reader


def _image(path: Path, shape: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(path)


def _cli(*args: str) -> None:
    from rim_bench.commands.cli import main

    assert main(list(args)) == 0


def _read(name: str, root: Path) -> list:
    from omegaconf import OmegaConf

    from rim_bench.run.datamodule import build_dataset

    dataset, _ = build_dataset(OmegaConf.create(
        {"name": name, "root": str(root), "split": "val", "classes": None, "max_images": None}))
    return [dataset[i] for i in range(len(dataset))]


def test_context_output_is_what_context59_and_60_read(context_src: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for image_id, (label_map, _) in CONTEXT_VAL.items():
        _image(data / "VOCdevkit/VOC2010/JPEGImages" / f"{image_id}.jpg", label_map.shape)
    _cli("convert", "context", "--src", str(context_src), "--dst", str(data))
    for name, shift in (("context60", 0), ("context59", 1)):
        samples = {s.image_id: s.label.numpy() for s in _read(name, data)}
        assert samples.keys() == CONTEXT_VAL.keys()
        for image_id, (_, expected) in CONTEXT_VAL.items():
            want = np.where(expected == 0, 255, expected - 1) if shift else expected
            np.testing.assert_array_equal(samples[image_id], want)


def test_coco_output_is_what_coco_object_reads(tmp_path: Path) -> None:
    raw = np.array([[0, 89, 91, 255]], np.uint8)  # person, toothbrush, stuff, unlabeled
    save_png(tmp_path / "raw/val2017/000000000139.png", raw)
    _image(tmp_path / "data/coco_stuff164k/images/val2017/000000000139.jpg", raw.shape)
    _cli("convert", "coco_object", "--src", str(tmp_path / "raw"), "--dst", str(tmp_path / "data"))
    (sample,) = _read("coco_object", tmp_path / "data")
    assert sample.image_id == "000000000139" and sample.label.tolist() == [[1, 80, 0, 0]]
