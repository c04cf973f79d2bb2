"""Each stage's output shapes, dtypes and hand-checkable values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.registry import MATCHERS, build_stage
from rim_bench.core.types import BuildContext, ReferenceBank, paint_labels
from rim_bench.data.classes import read_classes
from rim_bench.stages.features.dense import model_input_size
from rim_bench.stages.features.pooling import masked_average_pool
from rim_bench.stages.proposals.superpixels import SuperpixelProposer
from rim_bench.stages.references.bank import cached_bank
from rim_bench.stages.references.exemplars import ExemplarReferences
from rim_bench.stages.segmenter import PaintSegmenter, fill_uncovered, resolve_regions
from rim_bench.stages.segmenter.background import background_config


def _image(h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def test_superpixels_partition_the_image():
    masks = SuperpixelProposer(n_segments=12)(_image())
    assert masks.dtype == torch.bool and masks.shape[1:] == (40, 56) and masks.shape[0] > 1
    assert torch.equal(masks.sum(0), torch.ones(40, 56, dtype=torch.long))  # disjoint and covering


@pytest.mark.parametrize("h, w, short, patch, expected", [
    (100, 200, 50, 8, (48, 104)),   # aspect kept, both multiples of 8
    (375, 500, 448, 14, (448, 602)),  # VOC-sized image at DINOv2's patch 14
    (10, 10, 2, 8, (8, 8)),          # never below one patch
])
def test_model_input_size(h, w, short, patch, expected):
    assert model_input_size(h, w, short, patch) == expected


def test_featurizer_shapes_and_determinism(tiny_featurizer):
    feats = tiny_featurizer(_image(40, 56))
    h, w = model_input_size(40, 56, 64, 8)
    assert feats.shape == (32, h // 8, w // 8) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    assert torch.equal(feats, tiny_featurizer(_image(40, 56)))


def test_tiny_model_init_is_seeded(tiny_featurizer):
    from rim_bench.stages.features.dense import DinoV2Featurizer

    tiny = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                patch_size=8, image_size=64)
    same = DinoV2Featurizer("tiny", 64, {**tiny, "seed": 0})
    other = DinoV2Featurizer("tiny", 64, {**tiny, "seed": 1})
    image = _image()
    assert torch.equal(same(image), tiny_featurizer(image))
    assert not torch.equal(other(image), tiny_featurizer(image))


def test_missing_local_weights_is_a_clear_error(tmp_path: Path):
    from rim_bench.stages.backbones.dinov2 import load_dinov2

    with pytest.raises(ConfigError, match=r"featurizer\.dinov2\.model: no directory"):
        load_dinov2(str(tmp_path / "no-such-model"), {})


def test_masked_average_pool_by_hand():
    # A 2x2 feature grid under a 4x4 image: each feature cell covers a 2x2 block.
    features = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (D=1, 2, 2)
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True            # exactly cell (0, 0)
    masks[1, :, :2] = True             # cells (0, 0) and (1, 0)
    masks[2, 0, 1] = masks[2, 0, 2] = True  # a quarter of cells (0, 0) and (0, 1)
    pooled = masked_average_pool(masks, features)
    assert pooled.shape == (3, 1)
    torch.testing.assert_close(pooled[:, 0], torch.tensor([1.0, 2.0, 1.5]))


def test_masked_average_pool_no_regions():
    assert masked_average_pool(torch.zeros(0, 4, 4, dtype=torch.bool), torch.ones(5, 2, 2)).shape == (0, 5)


def test_regions_small_on_top_and_uncovered_unassigned():
    masks = torch.zeros(2, 3, 4, dtype=torch.bool)
    masks[0, :, :3] = True       # large region
    masks[1, 1, 1] = True        # small region inside it
    region_map = resolve_regions(masks)
    assert region_map.tolist() == [[0, 0, 0, -1], [0, 1, 0, -1], [0, 0, 0, -1]]
    out = paint_labels(region_map, torch.tensor([1, 2]))
    assert out.tolist() == [[1, 1, 1, 255], [1, 2, 1, 255], [1, 1, 1, 255]] and out.dtype == torch.long
    nearest = paint_labels(fill_uncovered(region_map), torch.tensor([1, 2]))
    assert nearest[:, 3].tolist() == [1, 1, 1]  # the column left of them is region 0's
    labels, painted = _segmenter(uncovered="nearest")(region_map, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert torch.equal(painted, fill_uncovered(region_map)) and labels.tolist() == [1, 0]
    assert _segmenter()(region_map, torch.zeros(2, 2))[1] is region_map  # uncovered: none
    assert resolve_regions(torch.zeros(0, 2, 2, dtype=torch.bool)).tolist() == [[-1, -1], [-1, -1]]


@pytest.mark.parametrize("n, max_pixels", [(7, 2**26), (300, 2**26), (300, 1300)])  # 1 byte keys; int32 keys; chunks
def test_resolve_regions_equals_painting_masks_one_by_one(n, max_pixels, monkeypatch):
    import rim_bench.stages.segmenter as segmenter

    monkeypatch.setattr(segmenter, "MAX_MASK_PIXELS", max_pixels)
    g = torch.Generator().manual_seed(n)
    masks = torch.rand(n, 20, 30, generator=g) < torch.rand(n, 1, 1, generator=g) * 0.3
    masks[1] = masks[0]  # equal areas: the higher index is painted last
    expected = torch.full((20, 30), -1)
    areas = masks.flatten(1).sum(1).tolist()
    for i in sorted(range(n), key=lambda i: (-areas[i], i)):  # large to small
        expected[masks[i]] = i
    assert torch.equal(resolve_regions(masks), expected)


def _segmenter(**kwargs) -> PaintSegmenter:
    defaults = {"min_score": None, "uncovered": "none", "background": background_config("class")}
    return PaintSegmenter(**{**defaults, **kwargs})


def test_segmenter_min_score_leaves_weak_regions_unassigned():
    region_map = torch.tensor([[0, 0, 0], [1, 1, 1]])
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.3]])
    labels, painted = _segmenter(min_score=0.5)(region_map, scores)
    assert labels.tolist() == [0, 255]
    assert paint_labels(painted, labels).tolist() == [[0, 0, 0], [255, 255, 255]]


def test_segmenter_background_rule():
    region_map = torch.tensor([[0, 1]])
    scores = torch.tensor([[-5.0, 0.9, 0.1], [-5.0, 0.2, 0.3]])  # class 0 = background, weak references
    rule = background_config("score", threshold=0.5)
    labels, painted = _segmenter(background=rule, background_id=0)(region_map, scores)
    assert labels.tolist() == [1, 0] and paint_labels(painted, labels).tolist() == [[1, 0]]
    # Without a class named background (VOC20, Context59), no rule changes a label.
    labels, _ = _segmenter(background=background_config("score", threshold=0.5))(region_map, scores)
    assert labels.tolist() == [1, 2]


def test_exemplar_bank_shapes(smoke_root: Path, tiny_featurizer):
    from rim_bench.stages.features.pooling import MaskedAveragePooling

    classes = read_classes("smoke")
    names = [n[0] for n in classes]
    ctx = BuildContext(tiny_featurizer, MaskedAveragePooling(), classes, torch.device("cpu"), smoke_root)
    bank = ExemplarReferences(str(smoke_root / "exemplars"), n_subcategories=2, images_per_subcategory=1).build(ctx)
    assert bank.features.shape == (len(names) * 2, 32) and bank.features.dtype == torch.float32
    assert bank.class_ids.tolist() == [c for c in range(len(names)) for _ in range(2)]
    assert len(bank.subcategory_names) == len(names) * 2
    assert all(m["mask_area"] > 0 for m in bank.meta)


def test_exemplar_missing_class_folder(smoke_root: Path):
    with pytest.raises(DataError, match=r"no exemplar images for class 'unicorn'.*class folders found: background"):
        ExemplarReferences(str(smoke_root / "exemplars"), None, None).scan(["background", "unicorn"])


def test_bank_cache_builds_once(tmp_path: Path):
    calls = []

    def build(work_dir: Path) -> ReferenceBank:
        assert work_dir.name.endswith(".partial") and work_dir.is_dir()
        calls.append(1)
        return ReferenceBank(torch.randn(3, 4), torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]),
                             ["a", "b"], ["a/x", "b/y", "b/z"], [{}, {}, {}])

    first, path, hit = cached_bank(tmp_path, {"k": 1}, build)
    second, path2, hit2 = cached_bank(tmp_path, {"k": 1}, build)
    assert (hit, hit2, len(calls), path) == (False, True, 1, path2)
    assert not path.with_name(path.name + ".partial").exists()  # published by renaming the work folder
    assert torch.equal(first.features, second.features) and second.class_names == ["a", "b"]
    cached_bank(tmp_path, {"k": 2}, build)
    assert len(calls) == 2  # another key is another bank


def test_registry_errors_name_the_key():
    from omegaconf import OmegaConf

    unknown = r"matcher\.name: unknown matcher 'nearest' \(known: cosine, prototype, random, rim\)"
    with pytest.raises(ConfigError, match=unknown):
        build_stage(MATCHERS, OmegaConf.create({"name": "nearest"}), "matcher")
    bad = OmegaConf.create({"name": "rim", "rim": {"temperature": 0.1, "divergence": "kl2", "alpha": 0.0,
                                                   "aggregation": "max"}})
    with pytest.raises(ConfigError, match=r"matcher\.rim\.divergence: unknown 'kl2' \(choose kl, js, l1\)"):
        build_stage(MATCHERS, bad, "matcher")


@pytest.mark.parametrize("text, fragment", [
    ("cat\ndog\ncat\n", "class 'cat' is already on line 1"),
    ("cat\n\ndog\n", "empty class name"),
    ("cat, , kitty\n", "empty class name"),
])
def test_class_file_validation(tmp_path: Path, text: str, fragment: str):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=fragment):
        read_classes(str(path))


def test_class_file_synonyms():
    classes = read_classes("smoke")
    assert classes[0][0] == "background" and len(classes) == 6
    assert all(len(c) >= 1 for c in classes)


def test_voc_layout_reads_sizes_and_labels(smoke_root: Path):
    from rim_bench.data.voc import AnyVOCLayout

    ds = AnyVOCLayout(smoke_root, "val", max_images=3, num_classes=6)
    sample = ds[0]
    assert len(ds) == 3 and sample.image.dtype == torch.uint8 and sample.image.shape[0] == 3
    assert sample.label.shape == sample.image.shape[1:] and sample.label.dtype == torch.uint8
    with Image.open(smoke_root / "SegmentationClass" / f"{sample.image_id}.png") as img:
        assert img.mode == "P"
    assert set(sample.label.unique().tolist()) <= {0, 1, 2, 3, 4, 5, 255}


def test_atomic_writes_get_the_usual_file_mode(tmp_path: Path):
    import os

    from rim_bench.core.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600


def test_smoke_never_deletes_a_folder_that_is_not_its_own(tmp_path: Path):
    from rim_bench.data.voc import Smoke

    (tmp_path / "DONE").write_text("my notes")
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a smoke benchmark's"):
        Smoke.locate(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_window_stride_larger_than_window_is_an_error():
    from rim_bench.core.errors import ParamError
    from rim_bench.stages.features.dense import DinoV2Featurizer

    tiny = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                patch_size=8, image_size=64, seed=0)
    with pytest.raises(ParamError, match="larger than window"):
        DinoV2Featurizer("tiny", 64, tiny, window=32, stride=64)


def test_region_cache_names_ids_apart_and_recomputes_damaged_files(tmp_path):
    from rim_bench.run.region_cache import RegionCache

    cache = RegionCache(tmp_path)
    region_map, feats = torch.zeros(4, 5, dtype=torch.long), torch.ones(1, 3)
    cache.put("a/b", region_map, feats)
    cache.put("a_b", region_map, 2 * feats)  # sanitizes to the same name as "a/b": must not collide
    assert torch.equal(cache.get("a/b")[1], feats) and torch.equal(cache.get("a_b")[1], 2 * feats)
    next(p for p in tmp_path.iterdir() if p.name.startswith("a_b.")).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="damaged cache entry .* computing it again"):
        assert cache.get("a_b") is None
