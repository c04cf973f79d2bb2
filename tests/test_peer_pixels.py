"""The peers' test pixels (rim_bench/data/peer_pixels.py): mmcv's image reading and keep-ratio
resize, checked against numbers recorded from mmcv 2.2.0 (tests/data/peer_pixels_from_mmcv.json)
and, where mmcv is importable, against mmcv's own LoadImageFromFile and Resize."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch.nn import functional as F

from rim_bench.core.errors import DataError
from rim_bench.data.peer_pixels import imread, rescale, rescaled_size

EXPECTED = json.loads((Path(__file__).with_name("data") / "peer_pixels_from_mmcv.json").read_text())


def mmcv_transforms():
    """mmcv's LoadImageFromFile and Resize, or a skip when mmcv is not installed."""
    transforms = pytest.importorskip("mmcv.transforms", reason="mmcv not installed (pip install mmcv-lite)")
    return transforms.LoadImageFromFile, transforms.Resize


def exif_jpeg(path: Path, orientation: int) -> np.ndarray:
    """A 20 x 30 JPEG, tagged with EXIF `orientation`, whose stored pixels are returned (H, W, 3)."""
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:, :10] = (250, 20, 20)  # a red band on the left: any turn or flip moves it
    pixels[:5] = (20, 20, 250)  # a blue band at the top
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=100, subsampling=0, exif=exif)
    return np.array(Image.open(path).convert("RGB"))


def test_sizes_follow_mmcvs_rounding():
    for key, size in EXPECTED["sizes"].items():
        dims, short = key.split("@")
        height, width = map(int, dims.split("x"))
        assert rescaled_size(height, width, int(short)) == tuple(size), key


def test_resize_is_cv2_bilinear_on_uint8_as_mmcv_resizes():
    hwc = np.random.default_rng(EXPECTED["resize_input_seed"]).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    image = torch.from_numpy(hwc).permute(2, 0, 1)
    got = rescale(image, 7)
    expected = torch.tensor(EXPECTED["resized"], dtype=torch.uint8).permute(2, 0, 1)
    assert got.dtype == torch.uint8 and torch.equal(got, expected)
    float_rounded = F.interpolate(image[None].float(), size=(7, 12), mode="bilinear", align_corners=False)[0].round()
    assert (float_rounded != expected.float()).sum() == 18  # what rim-bench did before: 18 of 252 values off by 1
    assert rescale(image, 3) is image  # already at its short side: unchanged, as cv2.resize to the same size


def test_an_exif_orientation_6_jpeg_is_turned_as_cv2_turns_it(tmp_path: Path):
    stored = exif_jpeg(tmp_path / "six.jpg", 6)
    got = imread(tmp_path / "six.jpg")
    assert got.shape == (3, 30, 20)  # orientation 6: shown turned 90° clockwise
    turned = np.array(ImageOps.exif_transpose(Image.open(tmp_path / "six.jpg")).convert("RGB"))
    assert torch.equal(got, torch.from_numpy(turned).permute(2, 0, 1))
    assert torch.equal(got, torch.from_numpy(np.rot90(stored, k=-1).copy()).permute(2, 0, 1))
    assert got[0, 0, 0] > 200 and got[2, 10, -1] > 200  # the red band now on top, the blue one on the right


def test_images_without_orientation_decode_as_pil_decodes_them(tmp_path: Path):
    stored = exif_jpeg(tmp_path / "one.jpg", 1)
    assert torch.equal(imread(tmp_path / "one.jpg"), torch.from_numpy(stored).permute(2, 0, 1))
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert torch.equal(imread(tmp_path / "grey.png"), torch.from_numpy(grey).expand(3, 3, 4))


def test_unreadable_files_are_one_line(tmp_path: Path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    for name in ("empty.jpg", "junk.jpg"):
        with pytest.raises(DataError, match=f"'{tmp_path / name}' cannot be decoded as an image by OpenCV"):
            imread(tmp_path / name)
    with pytest.raises(DataError, match="cannot be read"):
        imread(tmp_path / "missing.jpg")


@pytest.mark.parametrize("size", [(375, 500), (500, 375), (333, 500), (480, 640)])
def test_against_mmcv_itself(tmp_path: Path, size: tuple[int, int]):
    load, resize = mmcv_transforms()
    rng = np.random.default_rng(sum(size))
    smooth = np.array(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size[::-1],
                                                                                            Image.BICUBIC))
    Image.fromarray(smooth).save(tmp_path / "image.jpg", quality=90)
    exif_jpeg(tmp_path / "six.jpg", 6)
    for file in ("image.jpg", "six.jpg"):
        theirs = load()({"img_path": str(tmp_path / file)})["img"][..., ::-1]  # BGR; their preprocessor flips it
        ours = imread(tmp_path / file)
        assert torch.equal(ours, torch.from_numpy(theirs.copy()).permute(2, 0, 1))
        for short in (336, 448):
            resized = resize(scale=(2048, short), keep_ratio=True)({"img": theirs.copy()})["img"]
            assert torch.equal(rescale(ours, short), torch.from_numpy(resized.copy()).permute(2, 0, 1))


def test_jpeg_bytes_decode_alike_in_pil_and_cv2(tmp_path: Path):
    """Benchmark images are read with PIL for every method: for JPEGs the pixels are cv2's."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for subsampling in (0, 2):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=80, subsampling=subsampling)
        path = tmp_path / f"sub{subsampling}.jpg"
        path.write_bytes(buffer.getvalue())
        assert torch.equal(imread(path), torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1))


def test_one_module_imports_cv2():
    package = Path(__file__).parents[1] / "rim_bench"
    importers = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
                 if any(line.strip() in ("import cv2", "from cv2 import") or line.strip().startswith("from cv2 ")
                        for line in p.read_text(encoding="utf-8").splitlines())]
    assert importers == ["data/peer_pixels.py"]
