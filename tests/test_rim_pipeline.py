"""RIM's test side: SAM regions, the region cache, matcher invariances, bad input, and the
rim_<benchmark> experiments end to end on synthetic fixtures with tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import write_benchmark
from rim_oracles import pairwise_divergence, rim_reference_scores

from rim_bench.commands.cli import main
from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.types import ReferenceBank
from rim_bench.run.metrics import confusion_matrix, most_confused, scores_from_confusion
from rim_bench.stages.matching.rim import RIMMatcher

TINY_RIM = [
    "featurizer.dinov2.model=tiny", "featurizer.dinov2.input_size=64", "featurizer.dinov2.window=48",
    "featurizer.dinov2.stride=24",
    "proposer.sam.model_type=tiny", "proposer.sam.points_per_side=4", "proposer.sam.pred_iou_thresh=0.0",
    "proposer.sam.stability_score_thresh=0.0", "proposer.sam.min_area=0",
    "references.diffusion.model=tiny", "references.diffusion.image_size=64",
    "references.diffusion.num_inference_steps=2", "references.diffusion.n_subcategories=1",
    "references.diffusion.images_per_subcategory=1", "references.diffusion.mask=attention",
    "references.diffusion.contact_sheets=false",
]


# --------------------------------------------------------------------------- matcher


def test_exclude_self_equals_leave_one_out_by_brute_force():
    g = torch.Generator().manual_seed(0)
    regions, refs, t = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g,
                                                                                      dtype=torch.float64), 0.2
    p = torch.softmax(F.normalize(regions, dim=-1) @ F.normalize(refs, dim=-1).T / t, -1)
    n_refs = F.normalize(refs, dim=-1)
    for kind in ("kl", "js", "l1"):
        brute = torch.zeros(4, 5, dtype=torch.float64)
        for m in range(5):
            others = [j for j in range(5) if j != m]
            q = torch.softmax(n_refs[m] @ n_refs[others].T / t, -1)
            p_rest = p[:, others] / p[:, others].sum(1, keepdim=True)
            brute[:, m] = pairwise_divergence(p_rest.log(), q[None].log(), kind)[:, 0]
        got = rim_reference_scores(regions, refs, t, kind, 0.0, exclude_self=True)
        torch.testing.assert_close(got, -brute)
        # Chunking the references changes nothing.
        torch.testing.assert_close(got, rim_reference_scores(regions, refs, t, kind, 0.0, True, max_elements=30))


def _bank(features: torch.Tensor, class_ids: list[int]) -> ReferenceBank:
    k = len(class_ids)
    return ReferenceBank(features, torch.tensor(class_ids), torch.arange(k), ["a", "b", "c"],
                         [str(i) for i in range(k)])


@pytest.mark.parametrize("kwargs", [
    dict(divergence="kl", aggregation="max", exclude_self=False),
    dict(divergence="js", aggregation="mean", exclude_self=True),
    dict(divergence="l1", aggregation="logsumexp", exclude_self=False),
])
def test_rim_is_invariant_to_reference_order_and_feature_scale_and_batching(kwargs):
    g = torch.Generator().manual_seed(1)
    refs, regions = torch.randn(9, 8, generator=g), torch.randn(12, 8, generator=g)
    class_ids = [0, 0, 1, 1, 1, 2, 2, 0, 2]
    matcher = RIMMatcher(temperature=0.1, alpha=0.2, **kwargs)
    scores = matcher(regions, _bank(refs, class_ids))
    order = torch.randperm(9, generator=g)
    shuffled = matcher(regions, _bank(refs[order], [class_ids[i] for i in order]))
    torch.testing.assert_close(scores, shuffled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores, matcher(3.0 * regions, _bank(0.5 * refs, class_ids)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores, torch.cat([matcher(regions[:5], _bank(refs, class_ids)),
                                                  matcher(regions[5:], _bank(refs, class_ids))]))


@pytest.mark.parametrize("divergence, exclude_self", [("kl", False), ("kl", True), ("js", False), ("l1", True)])
def test_per_bank_state_is_computed_once_and_changes_nothing(divergence: str, exclude_self: bool):
    g = torch.Generator().manual_seed(2)
    bank = _bank(torch.randn(9, 8, generator=g), [0, 0, 1, 1, 1, 2, 2, 0, 2])
    regions = torch.randn(6, 8, generator=g)
    cached = RIMMatcher(0.1, divergence, 0.0, "max", exclude_self=exclude_self)
    streamed = RIMMatcher(0.1, divergence, 0.0, "max", exclude_self=exclude_self, cache_limit=0)
    torch.testing.assert_close(cached(regions, bank), streamed(regions, bank))
    state = cached.prepare(bank)
    assert state is not None  # KL: the normalizers; JS / L1: the K x K signatures of a small bank
    cached(regions[:2], bank)
    assert cached.prepare(bank) is state  # same bank: computed once
    other = _bank(torch.randn(9, 8, generator=g), [0, 0, 1, 1, 1, 2, 2, 0, 2])
    torch.testing.assert_close(cached(regions, other), streamed(regions, other))  # another bank: recomputed


def test_zero_norm_region_gets_finite_scores():
    scores = RIMMatcher(0.1, "kl", 0.0, "max")(torch.zeros(1, 4), _bank(torch.eye(4)[:3], [0, 1, 2]))
    assert torch.isfinite(scores).all()  # documented fallback: cosine 0 to every reference


# --------------------------------------------------------------------------- SAM regions and the cache


def test_sam_automatic_masks_are_boolean():
    from rim_bench.stages.proposals.sam_automatic import SamProposer

    proposer = SamProposer("tiny", None, {"seed": 0}, points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0,
                           stability_score_thresh=0.0, box_nms_thresh=0.7, crop_n_layers=0, min_area=0)
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 40, 52), dtype=np.uint8))
    masks = proposer(image)
    assert masks.dtype == torch.bool and masks.ndim == 3 and masks.shape[1:] == (40, 52) and masks.shape[0] >= 1


def test_missing_sam_checkpoint_for_proposals(tmp_path: Path):
    from rim_bench.stages.proposals.sam_automatic import SamProposer

    with pytest.raises(ConfigError, match=r"proposer\.sam\.checkpoint: SAM checkpoint .* not found"):
        SamProposer("vit_h", str(tmp_path / "sam.pth"), {"seed": 0}, 32, 64, 0.88, 0.95, 0.7, 0, 100)


def test_second_run_reads_regions_from_the_cache(tmp_path: Path, monkeypatch):
    from rim_bench.stages.proposals.superpixels import SuperpixelProposer

    calls = []
    real = SuperpixelProposer.__call__
    monkeypatch.setattr(SuperpixelProposer, "__call__", lambda self, image: calls.append(1) or real(self, image))
    common = ["test", "experiment=smoke", "data.max_images=3", f"cache_dir={tmp_path / 'cache'}"]
    assert main([*common, f"output_dir={tmp_path / 'a'}"]) == 0
    assert len(calls) == 3
    # Only matching changes: no proposals, same regions, other scores.
    assert main([*common, f"output_dir={tmp_path / 'b'}", "matcher.name=cosine"]) == 0
    assert len(calls) == 3
    # The proposer changes: regions are computed again.
    assert main([*common, f"output_dir={tmp_path / 'c'}", "proposer.superpixels.n_segments=20"]) == 0
    assert len(calls) == 6
    cached = json.loads((tmp_path / "a" / "metrics.json").read_text())
    again = tmp_path / "d"
    assert main([*common, f"output_dir={again}"]) == 0
    assert json.loads((again / "metrics.json").read_text())["per_class_iou"] == cached["per_class_iou"]


@pytest.mark.parametrize("paint", [["segmenter.paint.uncovered=none", "segmenter.paint.min_score=-0.9"],
                                   ["segmenter.paint.uncovered=nearest"]])
def test_scores_counted_by_region_equal_the_written_label_maps_scored_by_pixel(tmp_path: Path, paint: list[str]):
    """Scoring counts pixels by region without painting them (`region_confusion_matrix`); the label
    maps painted for writing, scored pixel by pixel, give the same matrix. Tiny SAM leaves pixels
    uncovered, so `nearest` fills some; the min_score leaves some regions unassigned."""
    from PIL import Image

    from rim_bench.core.config import load_config
    from rim_bench.run.datamodule import build_dataset

    out = tmp_path / "out"
    args = ["experiment=smoke", "proposer.name=sam", *TINY_RIM, "data.max_images=3", "cache_regions=false",
            f"output_dir={out}", "save_predictions=true", *paint]
    assert main(["test", *args]) == 0
    dataset, classes = build_dataset(load_config(args).data)
    confmat = sum(confusion_matrix(torch.from_numpy(np.array(Image.open(out / "predictions" / f"{s.image_id}.png"))),
                                   s.label, len(classes)) for s in (dataset[i] for i in range(3)))
    iou = 100 * scores_from_confusion(confmat)["iou"]
    metrics = json.loads((out / "metrics.json").read_text())
    np.testing.assert_allclose(list(metrics["per_class_iou"].values()), iou.numpy(), atol=1e-4)
    assert confmat[:, -1].sum() > 0 if "min_score" in paint[-1] else confmat[:, -1].sum() == 0  # unassigned or not


def test_image_with_no_regions_is_all_unassigned(tmp_path: Path, monkeypatch):
    from rim_bench.stages.proposals.superpixels import SuperpixelProposer

    monkeypatch.setattr(SuperpixelProposer, "__call__", lambda self, image: torch.zeros(0, *image.shape[1:],
                                                                                         dtype=torch.bool))
    out = tmp_path / "out"
    assert main(["test", "experiment=smoke", "data.max_images=2", "cache_regions=false", f"output_dir={out}",
                 "save_predictions=true"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mIoU"] == 0.0 and metrics["num_images"] == 2


def test_nan_features_name_the_image(tmp_path: Path, monkeypatch):
    from rim_bench.core.config import load_config
    from rim_bench.run.runner import run_test
    from rim_bench.stages.features.pooling import MaskedAveragePooling

    overrides = ["experiment=smoke", "data.max_images=1", "cache_regions=false", f"output_dir={tmp_path / 'out'}",
                 f"cache_dir={tmp_path / 'cache'}"]
    run_test(load_config(overrides))  # builds the bank with sane features
    monkeypatch.setattr(MaskedAveragePooling, "__call__", lambda self, masks, feats: torch.full(
        (masks.shape[0], feats.shape[0]), float("nan")))
    with pytest.raises(DataError, match=r"image 'smoke_0000': non-finite region features"):
        run_test(load_config(overrides))


def test_bank_problems_are_config_errors(smoke_root: Path):
    from rim_bench.core.config import load_config
    from rim_bench.run.assembly import Assembly

    pipeline = Assembly(load_config(["experiment=smoke"])).pipeline(["background", "sun"])
    with pytest.raises(ConfigError, match="have 5 dims but the featurizer gives 64: rebuild the bank"):
        pipeline.set_bank(_bank(torch.randn(3, 5), [0, 1, 1]))
    with pytest.raises(ConfigError, match="the reference bank is empty"):
        pipeline.set_bank(_bank(torch.zeros(0, 64), []))


def test_most_confused():
    t = torch.tensor([0, 0, 0, 1, 1, 2])
    p = torch.tensor([0, 1, 1, 255, 1, 0])
    pairs = most_confused(confusion_matrix(p, t, 3), ["a", "b", "c"], top=5)
    assert pairs == [
        {"true": "a", "predicted": "b", "pixels": 2, "share": round(2 / 3, 4)},
        {"true": "b", "predicted": "(unassigned)", "pixels": 1, "share": 0.5},
        {"true": "c", "predicted": "a", "pixels": 1, "share": 1.0},
    ]


# --------------------------------------------------------------------------- rim_<benchmark> end to end


@pytest.mark.parametrize("name", ["voc21", "voc20", "context60", "context59", "coco_object"])
def test_rim_experiments_run_end_to_end(name: str, tmp_path: Path):
    write_benchmark(name, tmp_path / "data", n=3, size=(48, 72))
    out = tmp_path / "out"
    assert main(["test", f"experiment=rim_{name}", f"data.root={tmp_path / 'data'}", f"output_dir={out}",
                 f"cache_dir={tmp_path / 'cache'}", "save_predictions=true", *TINY_RIM]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    classes = {"voc21": 21, "voc20": 20, "context60": 60, "context59": 59, "coco_object": 81}[name]
    assert metrics["num_images"] == 3 and len(metrics["per_class_iou"]) == classes
    assert metrics["bank"]["num_references"] > 0 and len(list((out / "predictions").iterdir())) == 3


def test_large_banks_keep_their_normalizers_next_to_them_on_disk(tmp_path: Path, monkeypatch):
    import rim_bench.stages.matching.rim as rim

    monkeypatch.setattr(rim, "STORE_NORMALIZERS_FROM", 5)  # "large" = 5 references here
    g = torch.Generator().manual_seed(5)
    features, regions = torch.randn(9, 8, generator=g), torch.randn(4, 8, generator=g)
    bank = _bank(features, [0, 0, 1, 1, 1, 2, 2, 0, 2])
    bank.directory = tmp_path
    expected = RIMMatcher(0.1, "kl", 0.0, "max")(regions, bank)
    stored = tmp_path / "rim_normalizers_T0.1.safetensors"
    assert stored.is_file()
    computed, compute = [], rim.bank_normalizers
    monkeypatch.setattr(rim, "bank_normalizers", lambda *a, **k: computed.append(1))
    reloaded = _bank(features, [0, 0, 1, 1, 1, 2, 2, 0, 2])  # the same bank, read again by another run
    reloaded.directory = tmp_path
    torch.testing.assert_close(RIMMatcher(0.1, "kl", 0.0, "max", exclude_self=True)(regions, reloaded),
                               RIMMatcher(0.1, "kl", 0.0, "max", exclude_self=True)(regions, bank))
    assert not computed  # read from disk
    torch.testing.assert_close(RIMMatcher(0.1, "kl", 0.0, "max")(regions, reloaded), expected)
    monkeypatch.setattr(rim, "bank_normalizers", compute)
    stored.write_bytes(b"damaged")
    again = _bank(features, [0, 0, 1, 1, 1, 2, 2, 0, 2])
    again.directory = tmp_path
    with pytest.warns(UserWarning, match="rim_normalizers_T0.1.safetensors"):  # named, set aside, recomputed
        torch.testing.assert_close(RIMMatcher(0.1, "kl", 0.0, "max")(regions, again), expected)
    assert stored.stat().st_size > 100  # and replaced
    assert [p.read_bytes() for p in tmp_path.glob("rim_normalizers_T0.1.safetensors.damaged-*")] == [b"damaged"]
