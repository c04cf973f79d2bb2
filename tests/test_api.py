"""The Python API (`RIM`) and `rim-bench segment`, on tiny random models and synthetic images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rim_bench import RIM
from rim_bench.commands.cli import main
from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.io import safe_name
from rim_bench.data.classes import parse_vocabulary
from rim_bench.run.vocabulary import subcategory_table


@pytest.fixture(scope="module")
def tiny_rim(tmp_path_factory: pytest.TempPathFactory) -> RIM:
    """Tiny SD references, tiny DINOv2, superpixels; a cache of its own."""
    return RIM.from_config("tiny", cache_dir=str(tmp_path_factory.mktemp("api-cache")))


def _image(smoke_root: Path, index: int = 0) -> Path:
    return sorted((smoke_root / "JPEGImages").glob("*.jpg"))[index]


def test_api_gives_what_rim_bench_test_gives(smoke_root: Path, tmp_path: Path):
    # Same config, same image: the API's label map is the prediction `rim-bench test` saves.
    out = tmp_path / "run"
    assert main(["test", "experiment=smoke", f"output_dir={out}", "data.max_images=2", "save_predictions=true"]) == 0
    rim = RIM.from_config("smoke")
    rim.set_vocabulary(["background", "sun", "leaf", "sea", "berry", "grape"])
    for index in range(2):
        image = _image(smoke_root, index)
        result = rim.segment(image)
        with Image.open(out / "predictions" / f"{image.stem}.png") as saved:
            np.testing.assert_array_equal(result.label_map.numpy(), np.asarray(saved))
        assert result.scores.shape == (int(result.region_map.max()) + 1, 6)


def test_new_vocabulary_rebuilds_only_the_bank(tiny_rim: RIM, smoke_root: Path):
    image = _image(smoke_root)
    first_bank = tiny_rim.set_vocabulary(["cat", "dog"])
    featurizer = tiny_rim.pipeline.featurizer
    calls = []
    proposer = tiny_rim.pipeline.proposer
    tiny_rim.pipeline.proposer = lambda img: calls.append(1) or proposer(img)
    try:
        a = tiny_rim.segment(image)
        b = tiny_rim.segment(image)
        assert torch.equal(a.label_map, b.label_map) and torch.equal(a.scores, b.scores)
        bank = tiny_rim.set_vocabulary(["cat", "sofa, couch", "plant"])
        c = tiny_rim.segment(image)
    finally:
        tiny_rim.pipeline.proposer = proposer
    assert tiny_rim.pipeline.featurizer is featurizer  # no model reloaded
    assert first_bank.class_names == ["cat", "dog"] and bank.class_names == ["cat", "sofa", "plant"]
    assert c.class_names == ["cat", "sofa", "plant"] and c.scores.shape[1] == 3
    assert len(calls) == 1  # the image's regions are cached by content, whatever the vocabulary
    assert set(c.area_shares()) <= {"cat", "sofa", "plant"} and abs(sum(c.area_shares().values()) - 1) < 1e-6
    overlay = c.overlay("x")
    assert overlay.mode == "RGB" and overlay.width > overlay.height


def test_every_image_form_gives_the_same_result(tiny_rim: RIM, smoke_root: Path):
    tiny_rim.set_vocabulary(["cat", "dog"])
    path = _image(smoke_root, 1)
    pil = Image.open(path).convert("RGB")
    array = np.asarray(pil)
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    results = [tiny_rim.segment(x) for x in (path, str(path), pil, array, tensor, tensor.float() / 255)]
    for r in results[1:]:
        assert torch.equal(r.label_map, results[0].label_map)


def test_subcategories_given_configured_or_made_from_the_name():
    table = subcategory_table(["cat", "aeroplane", "teapot"], {"cat": ["tabby cat", "sphynx"]}, "voc")
    assert table["cat"] == ["cat", "tabby cat", "sphynx"]  # the class itself first
    assert table["aeroplane"][0] == "aeroplane" and len(table["aeroplane"]) > 1  # from the shipped VOC list
    assert table["teapot"][:2] == ["teapot", "close-up teapot"]  # made from the name
    with pytest.raises(ConfigError, match="name no class"):
        subcategory_table(["cat"], {"dog": ["puppy"]}, None)


def test_given_subcategories_make_the_references(tiny_rim: RIM):
    bank = tiny_rim.set_vocabulary(["cat", "dog"], subcategories={"cat": ["tabby cat"]})
    assert "cat/tabby cat" in bank.subcategory_names


@pytest.mark.parametrize("classes, fragment", [
    ([], "vocabulary is empty"),
    (["cat", "Cat"], "given twice"),
    (["cat", " "], "empty name"),
])
def test_bad_vocabularies_are_clear_errors(classes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_vocabulary(classes)


def test_class_names_that_break_file_names_are_safe(tmp_path: Path, smoke_root: Path):
    rim = RIM.from_config("tiny", cache_dir=str(tmp_path), **{"references.diffusion.contact_sheets": True})
    bank = rim.set_vocabulary(["cat/dog: 'x'", "../sofa"])
    assert bank.class_names == ["cat/dog: 'x'", "../sofa"]
    sheets = sorted(p.name for p in tmp_path.glob("banks/*/sheets/*.png"))
    assert sheets == [f"{i:04d}_{safe_name(n)}.png" for i, n in enumerate(("cat/dog: 'x'", "../sofa"))]
    assert rim.segment(_image(smoke_root)).label_map.shape[0] > 0


def test_unreadable_images_and_a_missing_vocabulary_are_clear_errors(tmp_path: Path, smoke_root: Path):
    rim = RIM.from_config("smoke")
    with pytest.raises(ConfigError, match="set_vocabulary"):
        rim.segment(_image(smoke_root))
    rim.set_vocabulary(["background", "sun", "leaf", "sea", "berry", "grape"])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg' cannot be read"):
        rim.segment(broken)
    with pytest.raises(DataError, match="not found"):
        rim.segment(tmp_path / "missing.png")
    with pytest.raises(DataError, match=r"\(3, H, W\)"):
        rim.segment(torch.zeros(4, 8, 8, dtype=torch.uint8))


def test_segment_command_on_a_folder(tmp_path: Path, smoke_root: Path, capsys):
    folder, other = tmp_path / "images", tmp_path / "more"
    folder.mkdir(), other.mkdir()
    for i in range(3):
        Image.open(_image(smoke_root, i)).save(folder / f"img{i}.png")
    Image.open(_image(smoke_root, 3)).save(other / "img0.png")  # the same stem as one in `folder`
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--classes", "background,sun,leaf,sea,berry,grape", "experiment=smoke",
                 f"{other}/*.png", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*_overlay.png"))
    assert names == ["img0-2_overlay.png", "img0_overlay.png", "img1_overlay.png", "img2_overlay.png"]
    label = np.asarray(Image.open(out / "img1.png"))
    assert label.shape == np.asarray(Image.open(folder / "img1.png")).shape[:2]
    assert set(np.unique(label)) <= set(range(6)) | {255}
    printed = capsys.readouterr().out
    assert "img1.png: " in printed and "%" in printed
    assert (out / "classes.txt").read_text().splitlines()[1] == "1 sun"


@pytest.mark.parametrize("args, fragment", [
    (["--classes", "", "experiment=smoke"], "vocabulary is empty"),
    (["--classes", "cat,cat", "experiment=smoke"], "given twice"),
    (["--classes", "cat"], "give experiment=NAME"),
])
def test_segment_command_bad_input(tmp_path: Path, smoke_root: Path, capsys, args, fragment):
    assert main(["segment", str(_image(smoke_root)), *args, "--out", str(tmp_path)]) == 2
    assert fragment in capsys.readouterr().err


def test_segment_command_missing_and_unreadable_images(tmp_path: Path, capsys):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    for target, fragment in ((tmp_path / "nope.png", "not found"), (tmp_path / "bad.png", "cannot be read")):
        assert main(["segment", str(target), "--classes", "background,sun,leaf,sea,berry,grape",
                     "experiment=smoke", "--out", str(tmp_path / "o")]) == 2
        assert fragment in capsys.readouterr().err


def test_output_names_never_share_a_file():
    from rim_bench.data.images import output_names

    names = output_names([Path("p/a.png"), Path("p/a_overlay.png"), Path("q/a.jpg"), Path("r/a b.png"),
                          Path("Cat.png"), Path("cat.png"), Path("CAT_overlay.png")])
    files = [f.casefold() for n in names for f in (f"{n}.png", f"{n}_overlay.png")]
    assert len(files) == len(set(files)) and names[0] == "a" and names[3] == safe_name("a b")

