"""Baseline matchers on the same regions and references as RIM."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import Tensor

from rim_bench.core.params import ref
from rim_bench.core.registry import MATCHERS
from rim_bench.core.types import ReferenceBank
from rim_bench.stages.matching.scores import Aggregation, aggregate_by_class, cosine_matrix


@MATCHERS.register("cosine")
class CosineMatcher:
    """Individual matching: each region against each reference on its own, by cosine.

    Args:
        aggregation: how a class pools its references' cosines (``max`` = nearest reference).
    """

    def __init__(self, aggregation: Aggregation = "max") -> None:
        self.aggregation = aggregation

    def __call__(self, region_features: Tensor, bank: ReferenceBank) -> Tensor:
        """``(N, D)`` → ``(N, C)``."""
        scores = cosine_matrix(region_features, bank.features)
        return aggregate_by_class(scores, bank.class_ids, bank.num_classes, self.aggregation)


@MATCHERS.register("random")
class RandomMatcher:
    """Chance level: uniform random class scores.

    Each image's draws are seeded by `seed` and its region features, not by the order images
    come in, so a run gives the same numbers on any number of processes.
    """

    def __init__(self, seed: int = ref("${seed}")) -> None:
        self.seed = seed

    def __call__(self, region_features: Tensor, bank: ReferenceBank) -> Tensor:
        """``(N, D)`` → ``(N, C)``."""
        content = region_features.detach().float().cpu().numpy().tobytes()
        digest = hashlib.sha256(f"{self.seed}|".encode() + content).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)
        scores = torch.rand(region_features.shape[0], bank.num_classes, generator=generator)
        return scores.to(region_features.device)


@MATCHERS.register("prototype")
class PrototypeMatcher:
    """Class-prototype matching: each region against the mean of each class's normalized references."""

    def __call__(self, region_features: Tensor, bank: ReferenceBank) -> Tensor:
        """``(N, D)`` → ``(N, C)``; a class without references scores ``-inf``."""
        refs = F.normalize(bank.features.float(), dim=-1)
        sums = refs.new_zeros(bank.num_classes, refs.shape[1]).index_add_(0, bank.class_ids.to(refs.device), refs)
        scores = cosine_matrix(region_features, sums)
        present = torch.bincount(bank.class_ids, minlength=bank.num_classes) > 0
        return scores.masked_fill(~present.to(scores.device), float("-inf"))
