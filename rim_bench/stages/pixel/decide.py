"""From query logits to a label map, as SCLIP, NACLIP and ClearCLIP decide: × logit scale,
softmax over every query name (synonyms and background words included), max over the names of
a class, SCLIP's area rule, the probability threshold (class 0 below it), argmax."""

from __future__ import annotations

from torch import Tensor


def class_probabilities(logits: Tensor, query_class: Tensor, num_classes: int, logit_scale: float) -> Tensor:
    """Per-class probabilities (C, H, W): softmax over the Q query names of `logits` (Q, H, W)
    × `logit_scale`, then the max over the names of each class (`query_class` (Q,) long)."""
    probs = (logits * logit_scale).softmax(0)
    index = query_class.view(-1, 1, 1).expand_as(probs)
    return probs.new_zeros(num_classes, *probs.shape[1:]).scatter_reduce_(0, index, probs, "amax",
                                                                          include_self=False)


def suppress_small_areas(probs: Tensor, area_thd: float) -> Tensor:
    """SCLIP's area rule on `probs` (C, H, W), class 0 the background: a foreground class whose
    argmax area is not above `area_thd` × the whole foreground's area gets probability 0."""
    labels = probs.argmax(0)
    areas = labels.flatten().bincount(minlength=probs.shape[0])[1:].to(probs.dtype)
    keep = (areas > area_thd * areas.sum()).to(probs.dtype)
    out = probs.clone()
    out[1:] *= keep.view(-1, 1, 1)
    return out


def label_map(probs: Tensor, prob_thd: float = 0.0, area_thd: float | None = None) -> Tensor:
    """Labels (H, W) long from class probabilities (C, H, W): argmax after the area rule (if
    `area_thd`), class 0 where the best probability is below `prob_thd`."""
    if area_thd is not None:
        probs = suppress_small_areas(probs, area_thd)
    best, labels = probs.max(0)
    labels[best < prob_thd] = 0
    return labels
