"""Pieces every matcher shares: cosine similarity and per-class aggregation."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

Aggregation = Literal["max", "mean", "logsumexp"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """``(N, D)``, ``(K, D)`` → ``(N, K)`` cosine similarities; a zero vector has similarity 0.

    Computed in at least float32 (half-precision features are promoted), float64 kept.
    """
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return F.normalize(a.to(dtype), dim=-1) @ F.normalize(b.to(dtype), dim=-1).T


def aggregate_by_class(scores: Tensor, class_ids: Tensor, num_classes: int, how: str) -> Tensor:
    """Pool reference scores into class scores.

    Args:
        scores: ``(N, K)`` region-to-reference scores.
        class_ids: ``(K,)`` class of each reference, in ``[0, num_classes)``.
        how: ``max``, ``mean`` or ``logsumexp`` over each class's references.
    Returns:
        ``(N, C)``; a class without references scores ``-inf``.
    """
    n = scores.shape[0]
    index = class_ids.to(scores.device).expand(n, -1)
    if how in ("max", "mean"):
        out = scores.new_full((n, num_classes), float("-inf"))
        return out.scatter_reduce(1, index, scores, reduce="amax" if how == "max" else "mean", include_self=False)
    if how == "logsumexp":
        peak = aggregate_by_class(scores, class_ids, num_classes, "max")
        shifted = torch.exp(scores - peak.gather(1, index))
        total = scores.new_zeros(n, num_classes).scatter_add(1, index, shifted)
        return peak + torch.log(total)
    raise ValueError(f"unknown aggregation '{how}' (choose {', '.join(AGGREGATIONS)})")
