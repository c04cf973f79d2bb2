"""Data-set-level segmentation metrics from one confusion matrix.

The math is in pure functions; `ConfusionMatrixMetric` only holds the int64 state, which
torchmetrics sums across processes. The matrix has one extra column for pixels the
prediction leaves unassigned (255): they count as misses of their true class (a
false negative) without counting against any predicted class.

As in mmsegmentation, IoU and accuracy are averaged over the classes present in the
ground truth or the prediction (NaN classes are skipped), and ground-truth pixels equal
to the ignore index are not scored.
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from rim_bench.core.types import IGNORE_INDEX, Prediction


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Count (true class, predicted class) pairs with one bincount over the pixels.

    Args:
        pred: ``(H, W)`` int predicted ids in ``[0, C)`` or `ignore_index` (unassigned).
        target: ``(H, W)`` int true ids in ``[0, C)`` or `ignore_index` (not scored); a data
            set's uint8 label needs no range pass of its own.
        ignore_index: ≥ C.
    Returns:
        ``(C, C + 1) int64``: rows are true classes, the last column is "unassigned".
    """
    bins, target = _checked_target(pred, target, num_classes, ignore_index)
    pred = pred.long()
    if _outside(pred, bins):  # so that no pair overflows or aliases
        _raise_bad_values(target, pred, num_classes, ignore_index)
    # Pairs of raw values, no per-pixel remapping; a value other than a class or `ignore_index`
    # shows as counts left out (`_scored`).
    pairs = _host(pred).reshape(-1) * bins
    pairs += _host(target).reshape(-1)
    counts = _xp(pred).bincount(pairs, minlength=bins * bins)
    keep = [*range(num_classes), ignore_index]
    return _scored(counts.reshape(bins, bins)[keep], target, pred, num_classes, ignore_index)


def prediction_confusion_matrix(pred: Prediction, target: Tensor, num_classes: int) -> Tensor:
    """The confusion matrix of a `Prediction`: counted by region, without painting the label map,
    where it has regions (`region_confusion_matrix`); from its label map otherwise."""
    if pred.painted_regions is not None and pred.region_labels is not None:
        return region_confusion_matrix(pred.painted_regions, pred.region_labels, target.to(pred.painted_regions.device),
                                       num_classes)
    return confusion_matrix(pred.label_map, target.to(pred.label_map.device), num_classes)


def region_confusion_matrix(region_map: Tensor, region_labels: Tensor, target: Tensor, num_classes: int,
                            ignore_index: int = IGNORE_INDEX) -> Tensor:
    """The confusion matrix of the label map that paints `region_labels` over `region_map`
    (`Prediction.label_map`), without painting it: one gather of each pixel's row (its region's
    class) and one bincount of (class, true value) pairs. Pixels of no region (-1) and of regions
    labelled `ignore_index` count as unassigned. Every region's label is checked, even that of a
    region that covers no pixel.

    Args:
        region_map: ``(H, W)`` int region index in ``[0, N)``, -1 = none (unassigned).
        region_labels: ``(N,)`` int class ids in ``[0, C)`` or `ignore_index` (unassigned).
        target: as in `confusion_matrix`.
    Returns:
        ``(C, C + 1) int64``, as `confusion_matrix`.
    """
    bins, target = _checked_target(region_map, target, num_classes, ignore_index)
    if region_map.dtype != torch.long or region_labels.dtype != torch.long:  # int64 indices for `take`
        region_map, region_labels = region_map.long(), region_labels.long()
    labels = region_labels.tolist()  # N values: checked and mapped in Python, cheaper than N-sized tensor calls
    if any(v < 0 or v >= num_classes for v in labels if v != ignore_index):
        _raise_bad_values(target, region_labels.cpu(), num_classes, ignore_index)
    regions = _host(region_map)
    if region_map.numel() and (regions.min() < -1 or regions.max() >= len(labels)):
        raise ValueError(f"region map values {int(regions.min())}..{int(regions.max())}: expected -1 (none) "
                         f"to {len(labels) - 1} ({len(labels)} regions)")
    # Each region's row of a (C + 1, bins) table: its class, or C for unassigned; region -1 reads the last.
    rows = [num_classes * bins if v == ignore_index else v * bins for v in labels] + [num_classes * bins]
    xp = _xp(region_map)
    pairs = (np.array(rows) if xp is np else torch.tensor(rows, device=region_map.device)).take(regions.reshape(-1))
    pairs += _host(target).reshape(-1)
    counts = xp.bincount(pairs, minlength=(num_classes + 1) * bins)
    return _scored(counts.reshape(num_classes + 1, bins), target, region_labels, num_classes, ignore_index)


def _checked_target(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> tuple[int, Tensor]:
    """The pair stride `bins`, a power of two above every class id and `ignore_index`, and the
    target, checked to lie in ``[0, bins)`` (a uint8 one does, with bins = 256: no pass)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} differ in size")
    if ignore_index < num_classes:
        raise ValueError(f"ignore_index {ignore_index} is a class id (there are {num_classes} classes)")
    bins = 1 << max(num_classes, ignore_index).bit_length()
    if target.dtype != torch.uint8 or bins < 256:
        target = target.long()
        if _outside(target, bins):
            _raise_bad_values(target, pred.long(), num_classes, ignore_index)
    return bins, target


def _outside(values: Tensor, bins: int) -> bool:
    """Whether any of the values lies outside ``[0, bins)``."""
    return bool(values.numel()) and bool(values.min() < 0 or values.max() >= bins)


def _scored(table: Any, target: Tensor, pred: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """``(C + 1, bins)`` pair counts, rows the predicted classes then "unassigned", columns the
    true values → ``(C, C + 1)``; a pixel left out (a stray value) is an error."""
    scored = table.T[[*range(num_classes), ignore_index]]  # (C + 1, C + 1): true rows, ignore last
    if int(scored.sum()) != target.numel():
        _raise_bad_values(target.long(), pred, num_classes, ignore_index)
    return torch.as_tensor(scored[:num_classes], device=target.device)


def _host(x: Tensor) -> Any:
    """A CPU tensor as a numpy array (its per-call cost is a third of torch's at image size), else itself."""
    return x.numpy() if x.device.type == "cpu" else x


def _xp(x: Tensor) -> Any:
    """numpy for a CPU tensor (see `_host`), torch for any other."""
    return np if x.device.type == "cpu" else torch


def _raise_bad_values(target: Tensor, pred: Tensor, num_classes: int, ignore_index: int) -> NoReturn:
    """Name the values of the label (else the prediction) outside ``[0, C)`` and not the ignore index."""
    for values, what in ((target, "label"), (pred, "prediction")):
        bad = values[(values < 0) | ((values >= num_classes) & (values != ignore_index))]
        if bad.numel():
            raise ValueError(f"{what} values {sorted(set(bad.unique().tolist()))} outside [0, {num_classes}) "
                             f"and not {ignore_index}")
    raise AssertionError("confusion_matrix: counts left out, but no value outside the classes")


def scores_from_confusion(confmat: Tensor) -> dict[str, Tensor]:
    """Per-class IoU and accuracy, their means, and the overall pixel accuracy.

    Args:
        confmat: ``(C, C + 1)`` counts from `confusion_matrix`, summed over a data set.
    Returns:
        ``iou`` and ``acc``: ``(C,)`` float64 in [0, 1], NaN for a class that is neither
        in the ground truth nor predicted (acc: not in the ground truth);
        ``mIoU``, ``mAcc``, ``aAcc``: scalars in [0, 1].
    """
    cm = confmat.double()
    num_classes = cm.shape[0]
    tp = cm.diagonal()
    gt = cm.sum(1)  # every scored pixel of the class, unassigned ones included
    predicted = cm[:, :num_classes].sum(0)
    union = gt + predicted - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    acc = torch.where(gt > 0, tp / gt.clamp_min(1), torch.full_like(tp, float("nan")))
    total = gt.sum()
    return {
        "iou": iou,
        "acc": acc,
        "mIoU": iou.nanmean(),
        "mAcc": acc.nanmean(),
        "aAcc": tp.sum() / total if total > 0 else torch.tensor(float("nan"), dtype=torch.float64),
    }


class ConfusionMatrixMetric(Metric):
    """Accumulates the confusion matrix and the image count over a data set (DDP: summed);
    subclasses say what `compute` reads from them."""

    full_state_update = False
    confmat: Tensor  # (C, C + 1) counts, see `confusion_matrix`
    num_images: Tensor  # () count

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat", default=torch.zeros(num_classes, num_classes + 1, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("num_images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor | None = None, target: Tensor | None = None, *,
               confmat: Tensor | None = None, num_images: int = 1) -> None:
        """Add one image, its ``(H, W)`` prediction and label (both at the label's resolution); or
        the ``(C, C + 1)`` `confmat` of `num_images` images, summed from `confusion_matrix`."""
        if confmat is None:
            if pred is None or target is None:
                raise TypeError("update() needs a prediction and a label, or a confmat")
            confmat = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        elif confmat.shape != self.confmat.shape:
            raise ValueError(f"confmat {tuple(confmat.shape)}: expected {tuple(self.confmat.shape)}")
        self.confmat += confmat.to(self.confmat.device)
        self.num_images += num_images


class SegmentationMetrics(ConfusionMatrixMetric):
    """Every score of `scores_from_confusion`, with the confusion matrix and the image count."""

    def compute(self) -> dict[str, Tensor]:
        return {**scores_from_confusion(self.confmat), "confmat": self.confmat, "num_images": self.num_images}


def most_confused(confmat: Tensor, class_names: list[str], top: int = 5) -> list[dict]:
    """The `top` (true class, predicted class) pairs with the most mislabelled pixels.

    Args:
        confmat: ``(C, C + 1)`` counts from `confusion_matrix`.
    Returns:
        ``{"true", "predicted", "pixels", "share"}`` dicts, most pixels first; ``share`` is the
        fraction of the true class's scored pixels; "predicted" is ``"(unassigned)"`` for 255.
    """
    cm = confmat.clone()
    cm.fill_diagonal_(0)
    gt = confmat.sum(1).clamp_min(1)
    names = list(class_names) + ["(unassigned)"]
    flat = cm.flatten()
    order = torch.argsort(flat, descending=True, stable=True)[:top]
    pairs = []
    for index in order.tolist():
        t, p = divmod(index, cm.shape[1])
        if flat[index] == 0:
            break
        pairs.append({"true": names[t], "predicted": names[p], "pixels": int(flat[index]),
                      "share": round(float(flat[index] / gt[t]), 4)})
    return pairs


class SegmentationScore(ConfusionMatrixMetric):
    """One number from the confusion matrix, in percent, as a metric Lightning can log:
    ``"mIoU"``, ``"mAcc"``, ``"aAcc"``, or ``"iou"`` / ``"acc"`` of class `class_id`
    (NaN for a class neither in the ground truth nor predicted)."""

    def __init__(self, num_classes: int, score: str, class_id: int | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(num_classes, ignore_index)
        self.score, self.class_id = score, class_id

    def compute(self) -> Tensor:
        value = scores_from_confusion(self.confmat)[self.score]
        return 100 * (value if self.class_id is None else value[self.class_id]).float()

    def all_scores(self) -> dict[str, Tensor]:
        """Every score (as `SegmentationMetrics.compute`), synced across processes."""
        with self.sync_context():
            return {**scores_from_confusion(self.confmat), "confmat": self.confmat.clone(),
                    "num_images": self.num_images.clone()}


def score_collection(class_names: list[str], prefix: str = "test/") -> MetricCollection:
    """mIoU, mAcc, aAcc and each class's IoU (``<prefix>iou/<name>``) over one shared confusion
    matrix: one compute group, so each image is counted once whatever the number of scores."""
    c = len(class_names)
    scores: dict[str, Metric | MetricCollection] = {
        name: SegmentationScore(c, name) for name in ("mIoU", "mAcc", "aAcc")}
    for i, name in enumerate(class_names):
        scores[f"iou/{name.replace('.', '_')}"] = SegmentationScore(c, "iou", i)  # "." is a module path
    return MetricCollection(scores, prefix=prefix, compute_groups=[list(scores)])
