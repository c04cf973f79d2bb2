"""The data-set-level metrics against an independent numpy implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rim_bench.core.types import Prediction, paint_labels
from rim_bench.run.metrics import SegmentationMetrics, confusion_matrix, region_confusion_matrix, scores_from_confusion


def _numpy_reference(preds: list[np.ndarray], targets: list[np.ndarray], num_classes: int) -> dict:
    """Per-class IoU/accuracy by boolean masks over the whole data set, written independently."""
    p = np.concatenate([x.ravel() for x in preds])
    t = np.concatenate([x.ravel() for x in targets])
    scored = t != 255
    p, t = p[scored], t[scored]
    iou, acc = [], []
    for c in range(num_classes):
        tp = np.sum((p == c) & (t == c))
        fp = np.sum((p == c) & (t != c))
        fn = np.sum((p != c) & (t == c))  # includes pixels left unassigned (255)
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
        acc.append(tp / np.sum(t == c) if np.sum(t == c) else np.nan)
    return {"iou": np.array(iou), "acc": np.array(acc), "mIoU": np.nanmean(iou), "mAcc": np.nanmean(acc),
            "aAcc": np.sum(p == t) / len(t)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_numpy_reference_over_a_data_set(seed: int):
    rng = np.random.default_rng(seed)
    num_classes = 6
    preds, targets = [], []
    metric = SegmentationMetrics(num_classes)
    for _ in range(5):
        h, w = rng.integers(5, 20, size=2)
        t = rng.integers(0, num_classes - 1, (h, w))  # class 5 never in the ground truth...
        t[rng.random((h, w)) < 0.2] = 255             # ...some pixels ignored
        p = rng.integers(0, num_classes, (h, w))      # ...but class 5 is predicted: IoU 0, not NaN
        p[rng.random((h, w)) < 0.1] = 255             # some pixels unassigned
        preds.append(p)
        targets.append(t)
        metric.update(torch.from_numpy(p), torch.from_numpy(t))
    got = metric.compute()
    want = _numpy_reference(preds, targets, num_classes)
    np.testing.assert_allclose(got["iou"].numpy(), want["iou"], rtol=1e-12)
    np.testing.assert_allclose(got["acc"].numpy(), want["acc"], rtol=1e-12)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert float(got[key]) == pytest.approx(want[key], rel=1e-12)
    assert got["iou"][5] == 0.0 and torch.isnan(got["acc"][5])
    assert int(got["num_images"]) == 5


def test_class_absent_everywhere_is_skipped_in_the_mean():
    t = torch.tensor([[0, 0], [1, 1]])
    p = torch.tensor([[0, 1], [1, 1]])
    s = scores_from_confusion(confusion_matrix(p, t, num_classes=3))
    assert torch.isnan(s["iou"][2])
    assert float(s["mIoU"]) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_confusion_matrix_layout():
    t = torch.tensor([0, 1, 1, 255])
    p = torch.tensor([1, 255, 1, 0])
    cm = confusion_matrix(p, t, num_classes=2)
    assert cm.dtype == torch.int64 and cm.tolist() == [[0, 1, 0], [0, 1, 1]]


def test_bad_labels_and_shapes_are_errors():
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7), num_classes=2)
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(3, 2), num_classes=2)
    # A prediction equal to C is not a class (only 255 means "unassigned").
    with pytest.raises(ValueError, match=r"prediction values \[2\]"):
        confusion_matrix(torch.full((2, 2), 2), torch.zeros(2, 2, dtype=torch.long), num_classes=2)


def test_confusion_matrix_equals_counting_pixels_one_by_one():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 5, (30, 40), generator=g)
    p = torch.randint(0, 5, (30, 40), generator=g)
    t[torch.rand(30, 40, generator=g) < 0.2] = 255  # not scored, whatever is predicted there
    p[torch.rand(30, 40, generator=g) < 0.2] = 255  # unassigned: the last column
    expected = torch.zeros(5, 6, dtype=torch.long)
    for true, pred in zip(t.flatten().tolist(), p.flatten().tolist()):
        if true != 255:
            expected[true, 5 if pred == 255 else pred] += 1
    assert torch.equal(confusion_matrix(p, t, num_classes=5), expected)
    with pytest.raises(ValueError, match=r"label values \[-1\] outside \[0, 5\)"):
        confusion_matrix(p, torch.full_like(t, -1), num_classes=5)
    with pytest.raises(ValueError, match=r"prediction values \[300\]"):
        confusion_matrix(torch.full_like(p, 300), t, num_classes=5)


def test_a_bad_value_is_named_also_where_the_label_is_ignored():
    target = torch.full((4, 4), 255)
    target[0] = 1
    pred = torch.zeros(4, 4, dtype=torch.long)
    pred[3, 3] = 7  # on an ignored pixel: still a bug of the method, not of the data
    with pytest.raises(ValueError, match=r"prediction values \[7\]"):
        confusion_matrix(pred, target, num_classes=3)
    target[2, 2] = 300
    with pytest.raises(ValueError, match=r"label values \[300\]"):
        confusion_matrix(pred, target, num_classes=3)


def test_a_uint8_label_counts_the_same_and_its_stray_values_are_still_named():
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 4, (17, 23), generator=g)
    t[torch.rand(17, 23, generator=g) < 0.2] = 255
    p = torch.randint(0, 4, (17, 23), generator=g)
    p[torch.rand(17, 23, generator=g) < 0.1] = 255
    assert torch.equal(confusion_matrix(p, t.to(torch.uint8), 4), confusion_matrix(p, t, 4))
    assert torch.equal(confusion_matrix(p.to(torch.uint8), t.to(torch.uint8), 4), confusion_matrix(p, t, 4))
    stray = t.to(torch.uint8)
    stray[0, 0] = 9  # uint8 skips the range pass; 9 still shows as a pixel left out
    with pytest.raises(ValueError, match=r"label values \[9\]"):
        confusion_matrix(p, stray, 4)
    with pytest.raises(ValueError, match=r"prediction values \[-3\]"):
        confusion_matrix(torch.full_like(p, -3), t.to(torch.uint8), 4)
    with pytest.raises(ValueError, match="ignore_index 2 is a class id"):
        confusion_matrix(p, t, 4, ignore_index=2)


def test_summed_counts_update_the_metric_like_the_images_one_by_one():
    g = torch.Generator().manual_seed(4)
    pairs = [(torch.randint(0, 3, (9, 11), generator=g), torch.randint(0, 3, (9, 11), generator=g)) for _ in range(4)]
    by_image, summed = SegmentationMetrics(3), SegmentationMetrics(3)
    for p, t in pairs:
        by_image.update(p, t)
    summed.update(confmat=sum(confusion_matrix(p, t, 3) for p, t in pairs), num_images=4)
    a, b = by_image.compute(), summed.compute()
    assert torch.equal(a["confmat"], b["confmat"]) and int(b["num_images"]) == 4
    with pytest.raises(ValueError, match=r"confmat \(2, 2\): expected \(3, 4\)"):
        summed.update(confmat=torch.zeros(2, 2, dtype=torch.long))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counting_by_region_equals_counting_the_painted_map(seed: int):
    g = torch.Generator().manual_seed(seed)
    n, c = 9, 5
    region_map = torch.randint(-1, n, (31, 27), generator=g)  # -1: no region, unassigned
    labels = torch.randint(0, c, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.3] = 255  # regions left unassigned (min_score)
    target = torch.randint(0, c, (31, 27), generator=g)
    target[torch.rand(31, 27, generator=g) < 0.2] = 255
    painted = Prediction(region_map=region_map, scores=torch.zeros(n, c), region_labels=labels).label_map
    assert torch.equal(painted, paint_labels(region_map, labels))
    want = confusion_matrix(painted, target, c)
    for t in (target, target.to(torch.uint8)):
        assert torch.equal(region_confusion_matrix(region_map, labels, t, c), want)
    empty = torch.zeros(0, 0, dtype=torch.long)
    assert region_confusion_matrix(empty, torch.zeros(0, dtype=torch.long), empty, c).sum() == 0


def test_the_torch_path_of_a_gpu_counts_the_same(monkeypatch):
    """On a GPU the counting runs in torch (on a CPU in numpy): the torch path, run here on CPU tensors."""
    import rim_bench.run.metrics as metrics

    g = torch.Generator().manual_seed(5)
    region_map = torch.randint(-1, 6, (13, 17), generator=g)
    labels = torch.tensor([0, 3, 255, 1, 2, 3])
    target = torch.randint(0, 4, (13, 17), generator=g).to(torch.uint8)
    target[:2] = 255
    pred = paint_labels(region_map, labels)
    want_pixels = confusion_matrix(pred, target, 4)
    want_regions = region_confusion_matrix(region_map, labels, target, 4)
    monkeypatch.setattr(metrics, "_host", lambda x: x)
    monkeypatch.setattr(metrics, "_xp", lambda x: torch)
    assert torch.equal(want_pixels, want_regions)
    assert torch.equal(confusion_matrix(pred, target, 4), want_pixels)
    assert torch.equal(region_confusion_matrix(region_map, labels, target, 4), want_regions)
    with pytest.raises(ValueError, match=r"prediction values \[-2\]"):
        confusion_matrix(torch.full_like(pred, -2), target, 4)
    with pytest.raises(ValueError, match=r"prediction values \[300\]"):
        confusion_matrix(torch.full_like(pred, 300), target, 4)


def test_counting_by_region_names_bad_values():
    region_map = torch.tensor([[0, 1], [1, -1]])
    target = torch.tensor([[0, 1], [2, 255]], dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"prediction values \[7\]"):
        region_confusion_matrix(region_map, torch.tensor([0, 7]), target, 3)
    with pytest.raises(ValueError, match=r"region map values 0\.\.2: expected -1 \(none\) to 1 \(2 regions\)"):
        region_confusion_matrix(region_map.clamp_min(0) * 2, torch.tensor([0, 1]), target, 3)
    with pytest.raises(ValueError, match=r"region map values -2\.\.1"):
        region_confusion_matrix(torch.tensor([[0, 1], [1, -2]]), torch.tensor([0, 1]), target, 3)
    target[0, 0] = 9
    with pytest.raises(ValueError, match=r"label values \[9\]"):
        region_confusion_matrix(region_map, torch.tensor([0, 1]), target, 3)


def test_huge_predictions_and_other_dtypes():
    t = torch.zeros(2, 2, dtype=torch.uint8)
    for stray in (2**56 + 1, 2**35):  # would overflow the pair index, or ask for a vast bincount
        p = torch.zeros(2, 2, dtype=torch.long)
        p[0, 0] = stray
        with pytest.raises(ValueError, match=rf"prediction values \[{stray}\]"):
            confusion_matrix(p, t, 3)
    region_map = torch.tensor([[0, 1], [-1, 1]], dtype=torch.int32)
    labels = torch.tensor([2.0, 1.0])  # painted as int64, like `paint_labels`
    want = confusion_matrix(paint_labels(region_map, labels), t, 3)
    assert paint_labels(region_map, labels).tolist() == [[2, 1], [255, 1]]
    assert torch.equal(region_confusion_matrix(region_map, labels, t, 3), want)


def test_a_prediction_paints_from_its_painted_regions_and_repaints_after_a_change():
    region_map = torch.tensor([[0, -1], [1, 1]])
    p = Prediction(region_map, torch.zeros(2, 3), torch.tensor([2, 0]))
    assert p.painted_regions is region_map and p.label_map.tolist() == [[2, 255], [0, 0]]
    p.region_labels = torch.tensor([1, 1])
    assert p.label_map.tolist() == [[1, 255], [1, 1]]
    p.painted_regions = torch.tensor([[0, 0], [1, 1]])  # uncovered: nearest
    assert p.label_map.tolist() == [[1, 1], [1, 1]] and p.region_map[0, 1] == -1
